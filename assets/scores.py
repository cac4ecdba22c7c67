"""token_scores: the prior's teacher-forced log-probs and top-k candidates for every token.

The same builder makes token_scores_g{g}, the prior's scores of generation g's edited text (see
tledit_pipeline.generations): one asset per generation, so each generation's lineage is its own edge.
"""

import dagster as dg

from assets.lineage import run_settings
from assets.partitions import RANGES, for_each_shard, shards
from assets.resources import PriorResource, TleditResource, prior_code_version, reporter
from tledit_pipeline.generations import scores_asset, text_asset
from tledit_pipeline.health import histogram_chart
from tledit_pipeline.lake import partition_digest, partition_file
from tledit_pipeline.prior import describe
from tledit_pipeline.scoring import score_partition
from tledit_pipeline.settings import Settings
from tledit_pipeline.vocab import write_vocab

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

        def score_one(key: str) -> dict:
            partition_digest(s.home, source, key)  # first: a bad key or missing text writes nothing
            model = prior.load()
            vocab = write_vocab(s.home, model)
            info = describe(model) | {"vocab": vocab.name, "scoring": s.scoring.version()}  # + which text: score_partition
            # Streamed: documents are read, scored and written chunk by chunk.
            stats = score_partition(
                model, s.home, key, s.scoring, meta=info, report=reporter(context, key), generation=generation
            )
            hist = stats.shares
            return {
                "documents": stats.documents,
                "tokens": stats.tokens,
                "windows": stats.windows,
                "batches": stats.batches,
                "padding_share": round(stats.padding_share, 4),
                "tokens_per_s": round(stats.tokens / max(stats.seconds, 1e-9), 1),
                "inexact_documents": stats.inexact_documents,
                "share_p_ge_0.99": round(hist.get("prob_bin_099", 0.0), 4),
                "device": model.device,
                "dtype": model.dtype,
                "threads": stats.threads,
                "model": model.name,
                "prior_fingerprint": model.fingerprint,
                "probability_histogram": dg.MetadataValue.md(histogram_chart(hist)),
                "generation": generation,
                "perplexity": round(float(stats.perplexity), 3),
                "path": dg.MetadataValue.path(str(partition_file(s.home, scores_asset(generation), key))),
            }

        return dg.MaterializeResult(metadata={"shards_in_run": len(for_each_shard(context, score_one))})

    return token_scores
