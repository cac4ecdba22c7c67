"""Perplexity by a reference model: every variant's text scored by one model that sampled none of it.

distribution_health's perplexities are the prior's own: raw teacher-forced, synthetic the log-probs its
sampler recorded. A model scoring its own samples finds them likely by construction, so synthetic
perplexity sits low for that reason alone; the paper scores with a reference model. With the
`reference_model` setting, this module scores raw, edited, synthetic and raw_matched text alike,
teacher-forced by that model (`prior` names the prior itself, now reading every variant as text), with the
same scoring code as token_scores (scoring.score_table): per document, exp of the mean negative log-prob.
Synthetic and raw_matched documents include their human prefix of m tokens, both alike.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tledit_pipeline.lake import partition_file, read_partition
from tledit_pipeline.prior import Prior
from tledit_pipeline.scoring import score_table
from tledit_pipeline.settings import ScoringSettings
from tledit_pipeline.storage import Location

REFERENCE_ASSET = "reference_perplexity"
REFERENCE_SCHEMA = pa.schema(
    [("variant", pa.string()), ("shard", pa.string()), ("doc_id", pa.string()), ("tokens", pa.int32()), ("ppl", pa.float64())]
)


def variant_texts(home: Location, shard: str) -> dict[str, pa.Table]:
    """(doc_id, text) per variant of one shard: raw, edited, and where the baseline covers it synthetic and raw_matched."""
    out = {
        "raw": read_partition(home, "raw_corpus", shard, columns=["doc_id", "text"]),
        "edited": read_partition(home, "edited_corpus", shard, columns=["doc_id", "text"]),
    }
    if partition_file(home, "synthetic_corpus", shard).exists():
        syn = read_partition(home, "synthetic_corpus", shard, columns=["doc_id", "text", "reference_text"])
        out["synthetic"] = syn.select(["doc_id", "text"])
        out["raw_matched"] = pa.table({"doc_id": syn.column("doc_id"), "text": syn.column("reference_text")})
    return out


def document_perplexity(prior: Prior, shard: str, docs: pa.Table, scoring: ScoringSettings) -> pa.Table:
    """Per document: its scored tokens and exp of their mean negative log-prob under `prior`."""
    scores, _ = score_table(prior, shard, docs, scoring, report=lambda _msg: None)
    doc = scores.column("doc_id").to_numpy(zero_copy_only=False)
    lp = scores.column("logprob").to_numpy(zero_copy_only=False).astype(np.float64)
    ok = ~np.isnan(lp)
    ids = docs.column("doc_id").to_pylist()
    index = {d: i for i, d in enumerate(ids)}
    at = np.array([index[d] for d in doc[ok]], dtype=np.int64)
    n = np.bincount(at, minlength=len(ids))
    total = np.bincount(at, weights=-lp[ok], minlength=len(ids))
    ppl = np.where(n > 0, np.exp(total / np.maximum(n, 1)), np.nan)
    return pa.table({"doc_id": ids, "tokens": n.astype(np.int32), "ppl": ppl})


def shard_reference(prior: Prior, home: Location, shard: str, scoring: ScoringSettings) -> pa.Table:
    """REFERENCE_SCHEMA rows of one shard: every variant's documents scored by `prior`."""
    parts = []
    for variant, docs in variant_texts(home, shard).items():
        t = document_perplexity(prior, shard, docs, scoring)
        parts.append(
            pa.table(
                {
                    "variant": [variant] * t.num_rows,
                    "shard": [shard] * t.num_rows,
                    "doc_id": t.column("doc_id"),
                    "tokens": t.column("tokens"),
                    "ppl": t.column("ppl"),
                },
                schema=REFERENCE_SCHEMA,
            )
        )
    return pa.concat_tables(parts)


def quantiles(table: pa.Table) -> dict[str, dict[str, float]]:
    """{variant: {ppl_p10, ppl_p50, ppl_p90}} over the documents of `table` (the whole corpus)."""
    out: dict[str, dict[str, float]] = {}
    for v in dict.fromkeys(table.column("variant").to_pylist()):
        ppl = table.filter(pc.equal(table.column("variant"), v)).column("ppl").to_numpy(zero_copy_only=False)
        ppl = ppl[np.isfinite(ppl)]
        if len(ppl):
            q = np.quantile(ppl, [0.1, 0.5, 0.9])
            out[v] = {"ppl_p10": float(q[0]), "ppl_p50": float(q[1]), "ppl_p90": float(q[2])}
    return out


def markdown(q: dict[str, dict[str, float]], scored_by: str, prior_ppl: dict[str, dict[str, float]] | None = None) -> str:
    """The UI's table: each variant's perplexity by the reference, labelled with the model that scored it."""
    lines = [
        f"**Per-document perplexity scored by {scored_by}** (teacher-forced, every variant alike)",
        "",
        "| variant | ppl_p10 | ppl_p50 | ppl_p90 |" + (" prior's own ppl_p50 |" if prior_ppl else ""),
        "|---|---:|---:|---:|" + ("---:|" if prior_ppl else ""),
    ]
    for v, m in q.items():
        row = f"| {v} | {m['ppl_p10']:.2f} | {m['ppl_p50']:.2f} | {m['ppl_p90']:.2f} |"
        if prior_ppl is not None:
            own = prior_ppl.get(v, {}).get("ppl_p50")
            row += f" {'' if own is None else f'{own:.2f}'} |"
        lines.append(row)
    if prior_ppl is not None:
        lines.append("")
        lines.append(
            "prior's own: distribution_health's ppl_p50 (raw teacher-forced; synthetic: the sampler's own log-probs, "
            "self-scored; edited: only when generations > 1)."
        )
    return "\n".join(lines)
