"""The prior's per-shard steps as plain functions: what one shard's token_scores or synthetic_corpus does.

Shared by the two engines: the Dagster asset runs them in its own process (engine `local`) or hands them to
a Ray scoring actor (engine `ray`, tledit_pipeline.cluster). Either way a step writes the shard's partition
atomically and returns the shard's materialization metadata as plain, picklable values; a value that the
UI shows as Markdown, a path or text is marked by its type (Markdown, PathValue, Text), and the Dagster
layer turns it into its MetadataValue. Same function, same settings, same bytes, wherever it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tledit_pipeline.generations import scores_asset, text_asset
from tledit_pipeline.health import histogram_chart, probability_histogram
from tledit_pipeline.lake import partition_digest, partition_file, read_partition, write_partition
from tledit_pipeline.prior import Prior, describe, document_start_id
from tledit_pipeline.scoring import score_partition
from tledit_pipeline.settings import Settings
from tledit_pipeline.synthetic import synthesize
from tledit_pipeline.vocab import write_vocab

Report = Callable[[str], None]
LoadPrior = Callable[[], Prior]

SCORES, SYNTHETIC = "scores", "synthetic"


class Markdown(str):
    """A metadata value the UI renders as Markdown (a chart)."""


class PathValue(str):
    """A metadata value that is a file's location."""


class Text(str):
    """A metadata value shown as plain text."""


MARKED: dict[str, type[str]] = {"md": Markdown, "path": PathValue, "text": Text}


def encode_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """JSON form of a step's metadata that keeps each marked value's kind (a receipt, tledit_pipeline.cluster)."""
    kinds = {cls: tag for tag, cls in MARKED.items()}
    return {k: {"__" + kinds[type(v)] + "__": str(v)} if type(v) in kinds else v for k, v in meta.items()}


def decode_meta(data: dict[str, Any]) -> dict[str, Any]:
    """The inverse of encode_meta."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        tag = next(iter(v)) if isinstance(v, dict) and len(v) == 1 else ""
        out[k] = MARKED[tag[2:-2]](v[tag]) if tag.startswith("__") and tag[2:-2] in MARKED else v
    return out


@dataclass(frozen=True)
class ShardJob:
    """One shard of one of the prior's steps: token_scores(_g{generation}) or synthetic_corpus."""

    step: str  # SCORES or SYNTHETIC
    key: str
    generation: int = 0

    @property
    def asset(self) -> str:
        return scores_asset(self.generation) if self.step == SCORES else "synthetic_corpus"

    @property
    def source(self) -> str:
        """The text asset the step reads (its input partition)."""
        return text_asset(self.generation) if self.step == SCORES else "raw_corpus"


def score_shard(load: LoadPrior, s: Settings, key: str, generation: int = 0, report: Report | None = None) -> dict[str, Any]:
    """One teacher-forced pass of the prior over a shard's text; long documents in overlapping windows."""
    partition_digest(s.home, text_asset(generation), key)  # first: a bad key or missing text writes nothing
    model = load()
    vocab = write_vocab(s.home, model)
    info = describe(model) | {"vocab": vocab.name, "scoring": s.scoring.version()}  # + which text: score_partition
    # Streamed: documents are read, scored and written chunk by chunk.
    stats = score_partition(model, s.home, key, s.scoring, meta=info, report=report, generation=generation)
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
        "probability_histogram": Markdown(histogram_chart(hist)),
        "generation": generation,
        "perplexity": round(float(stats.perplexity), 3),
        "path": PathValue(str(partition_file(s.home, scores_asset(generation), key))),
    }


def synthesize_shard(load: LoadPrior, s: Settings, key: str, report: Report | None = None) -> dict[str, Any]:
    """The prior's continuation of each sampled document from its first m tokens, in pieces (KV cache, batched)."""
    raw = read_partition(s.home, "raw_corpus", key, columns=["doc_id", "text"])
    model = load()
    start = document_start_id(model.tokenizer) if s.scoring.document_start else None
    table, stats = synthesize(model, key, raw, s.synthetic, report=report, start_token=start)
    write_partition(
        s.home,
        "synthetic_corpus",
        key,
        table,
        meta=describe(model) | {"synthetic": s.synthetic.version(), "raw_digest": partition_digest(s.home, "raw_corpus", key)},
    )
    lp = np.concatenate(
        [np.asarray(x, dtype=np.float32) for x in table.column("logprobs").to_pylist()] or [np.zeros(0, np.float32)]
    )
    ppl = [float(np.exp(-np.mean(x))) for x in table.column("logprobs").to_pylist() if len(x)]
    return {
        "raw_documents": stats.documents,
        "sampled_documents": stats.sampled,
        # Not lost: documents outside the sample are simply not part of the baseline.
        "not_in_sample": Text(
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
        "probability_histogram": Markdown(
            histogram_chart(probability_histogram(lp), title="Probability of each sampled token under the prior")
        ),
        "device": model.device,
        "model": model.name,
        "path": PathValue(str(partition_file(s.home, "synthetic_corpus", key))),
    }


def run_job(load: LoadPrior, s: Settings, job: ShardJob, report: Report | None = None) -> dict[str, Any]:
    """Run one shard's step; its partition is written (atomically) and its metadata returned."""
    if job.step == SCORES:
        return score_shard(load, s, job.key, job.generation, report)
    if job.step == SYNTHETIC:
        return synthesize_shard(load, s, job.key, report)
    raise ValueError(f"unknown step {job.step!r}")
