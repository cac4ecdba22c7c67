"""edited_corpus: the edit rule applied to stored scores. Never loads the model.

The same builder makes edited_corpus_g{g}: generation g-1's text edited again with its own scores.
"""

import time

import dagster as dg

from assets.lineage import run_settings
from assets.partitions import RANGES, for_each_shard, shards
from assets.resources import TleditResource, reporter
from tledit_pipeline.edited import edit_partition
from tledit_pipeline.generations import scores_asset, text_asset
from tledit_pipeline.lake import partition_file
from tledit_pipeline.settings import Settings

ENGINE_VERSION = "2"  # 2: n_scored and n_deleted


def code_version(settings: Settings) -> str:
    """The edit settings are part of the code version: changing p, k, beta, seed or strategy marks it stale."""
    return f"edited-{ENGINE_VERSION}|{settings.edit.version()}"


def build(settings: Settings, generation: int = 1) -> dg.AssetsDefinition:
    """edited_corpus (generation 1, from the raw text) or edited_corpus_g{generation}."""

    @dg.asset(
        name=text_asset(generation),
        partitions_def=shards,
        backfill_policy=RANGES,
        group_name="corpus" if generation == 1 else "generations",
        kinds={"parquet"},
        deps=[text_asset(generation - 1), scores_asset(generation - 1)],
        code_version=code_version(settings),
        description=None
        if generation == 1
        else (f"Generation {generation}: {text_asset(generation - 1)} edited again with {scores_asset(generation - 1)}."),
    )
    def edited_corpus(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
        """Semi-synthetic text: over-confident tokens resampled, everything else byte-identical."""
        s = run_settings(tledit, text_asset(generation), settings, code_version)

        def edit_one(key: str) -> dict:
            t0 = time.perf_counter()
            stats = edit_partition(s.home, key, s.edit, generation=generation)
            seconds = time.perf_counter() - t0
            reporter(context, key)(
                f"edited {stats.documents} docs, {stats.tokens:,} tokens in {seconds:.2f}s "
                f"({stats.documents / max(seconds, 1e-9):,.0f} docs/s, {stats.tokens / max(seconds, 1e-9):,.0f} tokens/s): "
                f"{stats.eligible:,} eligible, {stats.changed:,} changed, {stats.deleted:,} deleted of {stats.scored:,} scored tokens"
            )
            return {
                "documents": stats.documents,
                "tokens": stats.tokens,
                "eligible_tokens": stats.eligible,
                "changed_tokens": stats.changed,
                "eligible_share": round(stats.eligible_share, 5),
                "changed_share": round(stats.changed_share, 5),
                "deleted_tokens": stats.deleted,
                "deleted_share": round(stats.deleted_share, 5),
                "generation": generation,
                "changed_of_eligible": round(stats.changed_of_eligible, 5),
                "edit_settings": s.edit.version(),
                "strategy": s.edit.strategy,
                "reedit_tokens_per_s": round(stats.tokens / max(seconds, 1e-9), 1),
                "path": dg.MetadataValue.path(str(partition_file(s.home, text_asset(generation), key))),
            }

        return dg.MaterializeResult(metadata={"shards_in_run": len(for_each_shard(context, edit_one))})

    return edited_corpus
