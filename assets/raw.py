"""raw_corpus: one source shard normalized to (shard, doc_id, text, passthrough) plus its rejects."""

import hashlib

import dagster as dg

from assets.instance import INDEXED_SOURCE
from assets.lineage import run_settings
from assets.partitions import RANGES, for_each_shard, shards
from assets.resources import TleditResource
from tledit_pipeline import storage
from tledit_pipeline.lake import partition_file, write_partition
from tledit_pipeline.settings import Settings
from tledit_pipeline.source import SourceError, discover_source, read_shard, write_not_taken

ENGINE_VERSION = "2"  # 2: the source schema is recorded for `tledit export`

# Per-shard metadata: what the source file was when it was read. The plan compares a file's size and
# modification time (an object's ETag) with these and re-hashes only the files whose stamp changed.
# The event log indexes these three (assets/instance.py), so the plan reads them without the records.
SOURCE_SHA, SOURCE_SIZE, SOURCE_MTIME = INDEXED_SOURCE


def code_version(settings: Settings) -> str:
    return f"raw-{ENGINE_VERSION}|text_field={settings.text_field}"


def build(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        partitions_def=shards,
        group_name="corpus",
        kinds={"parquet"},
        code_version=code_version(settings),
        backfill_policy=RANGES,
    )
    def raw_corpus(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
        """Documents of each source shard of the run; every row is accepted or rejected with a reason."""
        s = run_settings(tledit, "raw_corpus", settings, code_version)
        discovery = discover_source(s.source, s.home)  # once per run, not per shard
        found = {sh.key: sh for sh in discovery.shards}

        def read_one(key: str) -> dict:
            shard = found.get(key)
            if shard is None:
                raise SourceError(f"shard {key!r} is not in source {s.source!r} (the file was removed or renamed?)")
            size, change_hint = storage.stamp(shard.path)  # before reading: a later change is seen next time
            read = read_shard(shard, s.text_field)
            write_partition(
                s.home,
                "raw_corpus",
                shard.key,
                read.accepted,
                meta={
                    "source_file": shard.path.name,
                    "text_field": s.text_field,
                    "source_columns": list(read.columns.items()),
                },  # pairs: the footer JSON sorts keys
            )
            write_partition(s.home, "rejected_documents", shard.key, read.rejected)
            return {
                "source_file": str(shard.path),
                SOURCE_SHA: read.digest,  # the hash of exactly the bytes that were read
                SOURCE_SIZE: size,
                SOURCE_MTIME: str(change_hint),  # mtime locally, the ETag on a store: a hint, never a version
                "rows_in": read.rows_in,
                "documents": read.accepted.num_rows,
                "rejected": read.rejected.num_rows,
                "characters": sum(len(t) for t in read.accepted.column("text").to_pylist()),
                "path": dg.MetadataValue.path(str(partition_file(s.home, "raw_corpus", shard.key))),
            }

        done = for_each_shard(context, read_one)
        write_not_taken(s.home, discovery.not_taken)  # the source's files that are not shards, with the reason
        # Dagster keeps one data version per step, not per partition: the source files' hash (of the one
        # file, or of all the run's files), so a changed file always gives its shard a new version.
        hashes = "\n".join(f"{k}:{m[SOURCE_SHA]}" for k, m in sorted(done.items()))
        version = next(iter(done.values()))[SOURCE_SHA] if len(done) == 1 else hashlib.sha256(hashes.encode()).hexdigest()[:16]
        not_taken = {n.name: n.reason for n in discovery.not_taken}
        return dg.MaterializeResult(
            metadata={"shards_in_run": len(done), "source_files_not_taken": dg.MetadataValue.json(not_taken)},
            data_version=dg.DataVersion(version),
        )

    return raw_corpus
