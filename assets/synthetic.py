"""synthetic_corpus: the purely synthetic baseline, the prior continuing each sampled document on its own."""

import dagster as dg

from assets.lineage import run_settings
from assets.partitions import RANGES, shards
from assets.resources import PriorResource, TleditResource, prior_code_version, prior_step
from tledit_pipeline.settings import Settings
from tledit_pipeline.steps import SYNTHETIC, ShardJob

ENGINE_VERSION = "3"  # 2: pieces, decoding settings, the cached decoder; 3: the document-start token


def code_version(settings: Settings) -> str:
    """The baseline's settings (m, cap, sample, seed, decoding, pieces) and the prior. The document-start token
    is a scoring setting the baseline follows, so its perplexities stay comparable."""
    return (
        f"synthetic-{ENGINE_VERSION}|{prior_code_version(settings)}|dtype={settings.scoring.dtype}"
        f"|document_start={settings.scoring.document_start}|{settings.synthetic.version()}"
    )


def build(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        partitions_def=shards,
        group_name="diagnostics",
        kinds={"pytorch", "parquet"},
        deps=["raw_corpus"],
        pool="prior",
        backfill_policy=RANGES,
        code_version=code_version(settings),
    )
    def synthetic_corpus(context: dg.AssetExecutionContext, tledit: TleditResource, prior: PriorResource) -> dg.MaterializeResult:
        """The prior's continuation of each sampled document from its first m tokens, in pieces (KV cache, batched)."""
        s = run_settings(tledit, "synthetic_corpus", settings, code_version)
        # The work of one shard: tledit_pipeline.steps.synthesize_shard, here or on a Ray scoring actor.
        done = prior_step(context, s, prior, lambda key: ShardJob(SYNTHETIC, key), code_version(s))
        return dg.MaterializeResult(metadata={"shards_in_run": done})

    return synthetic_corpus
