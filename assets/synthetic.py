"""synthetic_corpus: the purely synthetic baseline, the prior continuing each sampled document on its own."""

import dagster as dg
import numpy as np

from assets.lineage import run_settings
from assets.partitions import RANGES, for_each_shard, shards
from assets.resources import PriorResource, TleditResource, prior_code_version, reporter
from tledit_pipeline.health import histogram_chart, probability_histogram
from tledit_pipeline.lake import partition_digest, partition_file, read_partition, write_partition
from tledit_pipeline.prior import describe, document_start_id
from tledit_pipeline.settings import Settings
from tledit_pipeline.synthetic import synthesize

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

        def synthesize_one(key: str) -> dict:
            raw = read_partition(s.home, "raw_corpus", key, columns=["doc_id", "text"])
            model = prior.load()  # cached: loaded once per process
            start = document_start_id(model.tokenizer) if s.scoring.document_start else None
            table, stats = synthesize(model, key, raw, s.synthetic, report=reporter(context, key), start_token=start)
            write_partition(
                s.home,
                "synthetic_corpus",
                key,
                table,
                meta=describe(model)
                | {"synthetic": s.synthetic.version(), "raw_digest": partition_digest(s.home, "raw_corpus", key)},
            )
            lp = np.concatenate(
                [np.asarray(x, dtype=np.float32) for x in table.column("logprobs").to_pylist()] or [np.zeros(0, np.float32)]
            )
            ppl = [float(np.exp(-np.mean(x))) for x in table.column("logprobs").to_pylist() if len(x)]
            return {
                "raw_documents": stats.documents,
                "sampled_documents": stats.sampled,
                # Not lost: documents outside the sample are simply not part of the baseline.
                "not_in_sample": dg.MetadataValue.text(
                    f"{stats.documents - stats.sampled} of {stats.documents} documents are outside the baseline's "
                    f"sample (synthetic_sample={s.synthetic.synthetic_sample}); they are not part of it, not lost"
                ),
                "generated_tokens": stats.new_tokens,
                "ended_by_end_token": stats.end_token,
                "tokens_per_s": round(stats.new_tokens / max(stats.seconds, 1e-9), 1),
                "pieces": stats.pieces,
                "batches": stats.batches,
                "decode_steps": stats.steps,
                "synthetic_settings": s.synthetic.version(),
                "ppl_p50": round(float(np.median(ppl)), 3) if ppl else float("nan"),
                "probability_histogram": dg.MetadataValue.md(
                    histogram_chart(probability_histogram(lp), title="Probability of each sampled token under the prior")
                ),
                "device": model.device,
                "model": model.name,
                "path": dg.MetadataValue.path(str(partition_file(s.home, "synthetic_corpus", key))),
            }

        return dg.MaterializeResult(metadata={"shards_in_run": len(for_each_shard(context, synthesize_one))})

    return synthetic_corpus
