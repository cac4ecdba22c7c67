"""edited_corpus: the edit rule applied to stored scores. Never loads the model."""

import dagster as dg

from assets.partitions import shards
from assets.resources import TleditResource
from tledit_pipeline.edited import edit_partition
from tledit_pipeline.lake import partition_file
from tledit_pipeline.settings import Settings

ENGINE_VERSION = "1"


def build(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        partitions_def=shards,
        group_name="corpus",
        kinds={"parquet"},
        deps=["raw_corpus", "token_scores"],
        # The edit settings are part of the code version: changing p, k, beta or seed marks it stale.
        code_version=f"edited-{ENGINE_VERSION}|{settings.edit.version()}",
    )
    def edited_corpus(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
        """Semi-synthetic text: over-confident tokens resampled, everything else byte-identical."""
        s = tledit.settings()
        key = context.partition_key
        stats = edit_partition(s.home, key, s.edit)
        context.log.info(
            f"edited {stats.documents} docs: {stats.eligible:,} eligible, {stats.changed:,} changed of {stats.scored:,} scored tokens"
        )
        return dg.MaterializeResult(
            metadata={
                "documents": stats.documents,
                "tokens": stats.tokens,
                "eligible_tokens": stats.eligible,
                "changed_tokens": stats.changed,
                "eligible_share": round(stats.eligible_share, 5),
                "changed_share": round(stats.changed_share, 5),
                "changed_of_eligible": round(stats.changed_of_eligible, 5),
                "edit_settings": s.edit.version(),
                "path": dg.MetadataValue.path(str(partition_file(s.home, "edited_corpus", key))),
            }
        )

    return edited_corpus
