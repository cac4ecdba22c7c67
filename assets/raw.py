"""raw_corpus: one source shard normalized to (shard, doc_id, text, passthrough) plus its rejects."""

import dagster as dg

from assets.partitions import shards
from assets.resources import TleditResource
from tledit_pipeline.lake import partition_file, write_partition
from tledit_pipeline.settings import Settings
from tledit_pipeline.source import find_shard, read_shard

ENGINE_VERSION = "2"  # 2: the source schema is recorded for `tledit export`


def build(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        partitions_def=shards,
        group_name="corpus",
        kinds={"parquet"},
        code_version=f"raw-{ENGINE_VERSION}|text_field={settings.text_field}",
    )
    def raw_corpus(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
        """Documents of one source shard; every row is accepted or rejected with a reason."""
        s = tledit.settings()
        shard = find_shard(s.source, s.home, context.partition_key)
        read = read_shard(shard, s.text_field)
        write_partition(
            s.home, "raw_corpus", shard.key, read.accepted,
            meta={"source_file": shard.path.name, "text_field": s.text_field, "source_columns": list(read.columns.items())},  # pairs: the footer JSON sorts keys
        )
        write_partition(s.home, "rejected_documents", shard.key, read.rejected)
        texts = read.accepted.column("text").to_pylist()
        return dg.MaterializeResult(
            metadata={
                "source_file": str(shard.path),
                "rows_in": read.rows_in,
                "documents": read.accepted.num_rows,
                "rejected": read.rejected.num_rows,
                "characters": sum(len(t) for t in texts),
                "path": dg.MetadataValue.path(str(partition_file(s.home, "raw_corpus", shard.key))),
            },
            data_version=dg.DataVersion(read.digest),  # the hash of exactly the bytes that were read
        )

    return raw_corpus
