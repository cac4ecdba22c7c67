"""token_scores: the prior's teacher-forced log-probs and top-k candidates for every token."""

import dagster as dg

from assets.partitions import RANGES, for_each_shard, shards
from assets.resources import PriorResource, TleditResource, prior_code_version, reporter
from tledit_pipeline.health import histogram_chart
from tledit_pipeline.lake import partition_digest, partition_file
from tledit_pipeline.prior import describe
from tledit_pipeline.scoring import score_partition
from tledit_pipeline.settings import Settings
from tledit_pipeline.vocab import write_vocab

ENGINE_VERSION = "1"


def build(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        partitions_def=shards,
        group_name="corpus",
        kinds={"pytorch", "parquet"},
        deps=["raw_corpus"],
        pool="prior",
        backfill_policy=RANGES,
        # The model's files are in the version too: weights replaced in the same folder mark scores stale.
        code_version=f"scores-{ENGINE_VERSION}|{prior_code_version(settings)}|{settings.scoring.version()}",
    )
    def token_scores(context: dg.AssetExecutionContext, tledit: TleditResource, prior: PriorResource) -> dg.MaterializeResult:
        """One teacher-forced pass of the prior; long documents in overlapping windows, nothing truncated."""
        s = tledit.settings()
        model = None

        def score_one(key: str) -> dict:
            nonlocal model
            raw_digest = partition_digest(s.home, "raw_corpus", key)  # first: a bad key or missing raw writes nothing
            model = model or prior.load()
            vocab = write_vocab(s.home, model)
            info = describe(model) | {"vocab": vocab.name, "scoring": s.scoring.version(), "raw_digest": raw_digest}
            # Streamed: raw documents are read, scored and written chunk by chunk.
            stats = score_partition(model, s.home, key, s.scoring, meta=info, report=reporter(context, key))
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
                "path": dg.MetadataValue.path(str(partition_file(s.home, "token_scores", key))),
            }

        return dg.MaterializeResult(metadata={"shards_in_run": len(for_each_shard(context, score_one))})

    return token_scores
