"""token_scores: the prior's teacher-forced log-probs and top-k candidates for every token.

The same builder makes token_scores_g{g}, the prior's scores of generation g's edited text (see
tledit_pipeline.generations): one asset per generation, so each generation's lineage is its own edge.
"""

import dagster as dg

from assets.lineage import run_settings
from assets.partitions import RANGES, shards
from assets.resources import PriorResource, TleditResource, prior_code_version, prior_step
from tledit_pipeline.generations import scores_asset, text_asset
from tledit_pipeline.settings import Settings
from tledit_pipeline.steps import SCORES, ShardJob

ENGINE_VERSION = "1"


def code_version(settings: Settings) -> str:
    """The model's files are in the version too: weights replaced in the same folder mark scores stale."""
    return f"scores-{ENGINE_VERSION}|{prior_code_version(settings)}|{settings.scoring.version()}"


def build(settings: Settings, generation: int = 0) -> dg.AssetsDefinition:
    """token_scores (generation 0: the raw text) or token_scores_g{generation} (that generation's edited text)."""
    source = text_asset(generation)
    # With a context field the prompt comes from raw_corpus whatever text is scored.
    deps = [source] + (["raw_corpus"] if generation and settings.scoring.context_field else [])

    @dg.asset(
        name=scores_asset(generation),
        partitions_def=shards,
        backfill_policy=RANGES,
        group_name="corpus" if generation == 0 else "generations",
        kinds={"pytorch", "parquet"},
        deps=deps,
        pool="prior",
        code_version=code_version(settings),
        description=None if generation == 0 else f"The prior's scores of generation {generation}'s edited text ({source}).",
    )
    def token_scores(context: dg.AssetExecutionContext, tledit: TleditResource, prior: PriorResource) -> dg.MaterializeResult:
        """One teacher-forced pass of the prior; long documents in overlapping windows, nothing truncated."""
        s = run_settings(tledit, scores_asset(generation), settings, code_version)
        # The work of one shard: tledit_pipeline.steps.score_shard, here or on a Ray scoring actor (engine setting).
        done = prior_step(context, s, prior, lambda key: ShardJob(SCORES, key, generation), code_version(s))
        return dg.MaterializeResult(metadata={"shards_in_run": done})

    return token_scores
