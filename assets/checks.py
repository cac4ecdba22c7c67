"""Asset checks: nothing lost between raw and edited, every token scored, edit shares reported."""

import dagster as dg
import numpy as np
import pyarrow.compute as pc

from assets.partitions import shards
from assets.resources import TleditResource
from tledit_pipeline.lake import read_partition


@dg.asset_check(asset="edited_corpus", partitions_def=shards, blocking=True)
def every_raw_document_edited(context: dg.AssetCheckExecutionContext, tledit: TleditResource) -> dg.AssetCheckResult:
    """Each raw document has exactly one edited counterpart, and untouched documents are byte-identical."""
    s = tledit.settings()
    key = context.partition_key
    raw = read_partition(s.home, "raw_corpus", key, columns=["doc_id", "text"])
    edited = read_partition(s.home, "edited_corpus", key, columns=["doc_id", "text", "n_changed"])
    raw_text = dict(zip(raw.column("doc_id").to_pylist(), raw.column("text").to_pylist()))
    ed_ids = edited.column("doc_id").to_pylist()
    missing = sorted(set(raw_text) - set(ed_ids))
    extra = sorted(set(ed_ids) - set(raw_text))
    duplicated = len(ed_ids) - len(set(ed_ids))
    altered = [
        d
        for d, t, c in zip(ed_ids, edited.column("text").to_pylist(), edited.column("n_changed").to_pylist())
        if c == 0 and raw_text.get(d) != t
    ]
    return dg.AssetCheckResult(
        passed=not (missing or extra or duplicated or altered),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "raw_documents": len(raw_text),
            "edited_documents": len(ed_ids),
            "missing": len(missing),
            "extra": len(extra),
            "duplicated": duplicated,
            "unchanged_but_different": len(altered),
            "examples": ", ".join((missing + extra + altered)[:5]),
        },
    )


@dg.asset_check(asset="edited_corpus", partitions_def=shards)
def edit_shares(context: dg.AssetCheckExecutionContext, tledit: TleditResource) -> dg.AssetCheckResult:
    """Reports the eligible and changed shares (reviewers asked for them); fails only on impossible counts."""
    s = tledit.settings()
    ed = read_partition(s.home, "edited_corpus", context.partition_key, columns=["n_tokens", "n_eligible", "n_changed"])
    scored = int(pc.sum(pc.subtract(ed.column("n_tokens"), 1)).as_py() or 0)
    eligible = int(pc.sum(ed.column("n_eligible")).as_py() or 0)
    changed = int(pc.sum(ed.column("n_changed")).as_py() or 0)
    return dg.AssetCheckResult(
        passed=0 <= changed <= eligible <= scored,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "scored_tokens": scored,
            "eligible_share": round(eligible / scored, 5) if scored else 0.0,
            "changed_share": round(changed / scored, 5) if scored else 0.0,
            "changed_of_eligible": round(changed / eligible, 5) if eligible else 0.0,
            "threshold_p": s.edit.threshold,
        },
    )


@dg.asset_check(asset="token_scores", partitions_def=shards, blocking=True)
def every_token_scored(context: dg.AssetCheckExecutionContext, tledit: TleditResource) -> dg.AssetCheckResult:
    """Every token after the first of each document has a log-prob; positions are contiguous (nothing truncated)."""
    s = tledit.settings()
    key = context.partition_key
    sc = read_partition(s.home, "token_scores", key, columns=["doc_id", "pos", "logprob"])
    pos = sc.column("pos").to_numpy()
    lp_null = sc.column("logprob").is_null().to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(pos == 0)
    ends = np.append(starts[1:], len(pos))
    gaps = sum(int(not np.array_equal(pos[a:b], np.arange(b - a))) for a, b in zip(starts, ends))
    unscored = int((lp_null & (pos > 0)).sum())
    raw_docs = read_partition(s.home, "raw_corpus", key, columns=["doc_id"]).num_rows
    return dg.AssetCheckResult(
        passed=unscored == 0 and gaps == 0 and len(starts) == raw_docs,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"documents": len(starts), "raw_documents": raw_docs, "tokens": len(pos), "unscored_tokens": unscored, "documents_with_gaps": gaps},
    )


CHECKS = [every_raw_document_edited, edit_shares, every_token_scored]
