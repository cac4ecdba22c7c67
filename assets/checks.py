"""Asset checks: nothing lost between raw and edited, every token scored, edit shares reported,
and the distribution health of the edited corpus (blocking) and of the synthetic baseline (a warning)."""

import dagster as dg
import numpy as np
import polars as pl
import pyarrow.compute as pc

from assets.partitions import shards
from assets.resources import TleditResource
from tledit_pipeline.health import profile_health
from tledit_pipeline.lake import connect, partition_file, partition_meta, read_partition
from tledit_pipeline.probe import Estimate, edited_verdict, final_ppl, read_probe, synthetic_verdict
from tledit_pipeline.settings import CheckSettings


@dg.asset_check(asset="edited_corpus", partitions_def=shards, blocking=True)
def every_raw_document_edited(context: dg.AssetCheckExecutionContext, tledit: TleditResource) -> dg.AssetCheckResult:
    """Each raw document has exactly one edited counterpart, and untouched documents are byte-identical."""
    s = tledit.settings()
    key = context.partition_key
    raw = read_partition(s.home, "raw_corpus", key, columns=["doc_id", "text"])
    edited = read_partition(s.home, "edited_corpus", key, columns=["doc_id", "text", "n_changed", "n_deleted"])
    raw_text = dict(zip(raw.column("doc_id").to_pylist(), raw.column("text").to_pylist()))
    ed_ids = edited.column("doc_id").to_pylist()
    missing = sorted(set(raw_text) - set(ed_ids))
    extra = sorted(set(ed_ids) - set(raw_text))
    duplicated = len(ed_ids) - len(set(ed_ids))
    altered = [
        d
        for d, t, c, x in zip(
            ed_ids, edited.column("text").to_pylist(), edited.column("n_changed").to_pylist(), edited.column("n_deleted").to_pylist()
        )
        if c == 0 and x == 0 and raw_text.get(d) != t
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
    ed = read_partition(s.home, "edited_corpus", context.partition_key, columns=["n_scored", "n_eligible", "n_changed", "n_deleted"])
    scored = int(pc.sum(ed.column("n_scored")).as_py() or 0)
    deleted = int(pc.sum(ed.column("n_deleted")).as_py() or 0)
    eligible = int(pc.sum(ed.column("n_eligible")).as_py() or 0)
    changed = int(pc.sum(ed.column("n_changed")).as_py() or 0)
    return dg.AssetCheckResult(
        passed=0 <= changed <= eligible <= scored and 0 <= deleted <= scored - eligible,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "scored_tokens": scored,
            "eligible_share": round(eligible / scored, 5) if scored else 0.0,
            "changed_share": round(changed / scored, 5) if scored else 0.0,
            "changed_of_eligible": round(changed / eligible, 5) if eligible else 0.0,
            "deleted_share": round(deleted / scored, 5) if scored else 0.0,
            "threshold_p": s.edit.threshold,
        },
    )


@dg.asset_check(asset="token_scores", partitions_def=shards, blocking=True)
def every_token_scored(context: dg.AssetCheckExecutionContext, tledit: TleditResource) -> dg.AssetCheckResult:
    """Every token has a log-prob (after the document-start token; without one, all but each document's first);
    positions are contiguous (nothing truncated)."""
    s = tledit.settings()
    key = context.partition_key
    sc = read_partition(s.home, "token_scores", key, columns=["doc_id", "pos", "logprob"])
    pos = sc.column("pos").to_numpy()
    lp_null = sc.column("logprob").is_null().to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(pos == 0)
    ends = np.append(starts[1:], len(pos))
    gaps = sum(int(not np.array_equal(pos[a:b], np.arange(b - a))) for a, b in zip(starts, ends))
    first = partition_meta(s.home, "token_scores", key).get("first_scored", 1)
    unscored = int((lp_null & (pos >= first)).sum())
    raw_docs = read_partition(s.home, "raw_corpus", key, columns=["doc_id"]).num_rows
    return dg.AssetCheckResult(
        passed=unscored == 0 and gaps == 0 and len(starts) == raw_docs,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"documents": len(starts), "raw_documents": raw_docs, "tokens": len(pos), "unscored_tokens": unscored,
                  "documents_with_gaps": gaps, "first_scored_position": first},
    )


def health_verdict(health: pl.DataFrame, variant: str, shard: str, t: CheckSettings) -> tuple[bool, dict]:
    """Does `variant` keep raw's long tail (coverage ratio) and stay close to raw (JS over hashed features)?"""
    v = {(r["variant"], r["metric"]): r["value"] for r in health.filter(pl.col("shard") == shard).iter_rows(named=True)}
    raw_cov = v.get(("raw", "tail_coverage"))
    cov = v.get((variant, "tail_coverage"))
    js = v.get((variant, "js_divergence_vs_raw"))
    ratio = None if raw_cov is None or cov is None else cov / raw_cov
    passed = (ratio is None or ratio >= t.min_tail_coverage) and (js is None or js <= t.max_js_divergence)
    meta = {
        "tail_coverage": cov,
        "tail_coverage_of_raw": raw_cov,
        "coverage_ratio": ratio,
        "min_tail_coverage": t.min_tail_coverage,
        "js_divergence_vs_raw": js,
        "max_js_divergence": t.max_js_divergence,
    }
    for m in ("top64_share", "distinct_2", "hashed_effective_buckets", "ppl_p10", "ppl_p50", "ppl_p90"):
        for var in (variant, "raw", "raw_matched") if variant == "synthetic" else (variant, "raw"):
            if (var, m) in v:
                meta[f"{var}/{m}"] = v[(var, m)]
    return passed, {k: (round(x, 6) if isinstance(x, float) else x) for k, x in meta.items() if x is not None}


def _profile_health(context: dg.AssetCheckExecutionContext, tledit: TleditResource) -> pl.DataFrame:
    return profile_health(partition_file(tledit.settings().home, "ngram_profile", context.partition_key))


@dg.asset_check(asset="ngram_profile", partitions_def=shards, blocking=True)
def edited_keeps_the_tail(context: dg.AssetCheckExecutionContext, tledit: TleditResource) -> dg.AssetCheckResult:
    """Per shard: edited keeps at least min_tail_coverage of raw's rare bigrams and its hashed features stay
    within max_js_divergence of raw. ERROR and blocking: a bad edit stops here."""
    s = tledit.settings()
    passed, meta = health_verdict(_profile_health(context, tledit), "edited", context.partition_key, s.checks)
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.ERROR, metadata=meta)


@dg.asset_check(asset="ngram_profile", partitions_def=shards)
def synthetic_collapse_signal(context: dg.AssetCheckExecutionContext, tledit: TleditResource) -> dg.AssetCheckResult:
    """Per shard: the synthetic baseline against the same thresholds. Expected to warn: that is the collapse
    signal (lost tail, shifted features) the edited corpus is meant to avoid. Never fails the run."""
    s = tledit.settings()
    health = _profile_health(context, tledit)
    if not health.filter(pl.col("variant") == "synthetic").height:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no documents of this shard are in the baseline's sample"})
    passed, meta = health_verdict(health, "synthetic", context.partition_key, s.checks)
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata=meta)


def _overall(tledit: TleditResource) -> pl.DataFrame:
    with connect(tledit.settings().home, read_only=True) as con:
        return pl.from_arrow(con.execute("SELECT * FROM distribution_health WHERE shard = '__all__'").to_arrow_table())


@dg.asset_check(asset="distribution_health")
def edited_health_overall(tledit: TleditResource) -> dg.AssetCheckResult:
    """Whole corpus: the edited corpus within the thresholds of raw (ERROR)."""
    passed, meta = health_verdict(_overall(tledit), "edited", "__all__", tledit.settings().checks)
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.ERROR, metadata=meta)


@dg.asset_check(asset="distribution_health")
def synthetic_collapse_overall(tledit: TleditResource) -> dg.AssetCheckResult:
    """Whole corpus: the synthetic baseline against the same thresholds, with its perplexity spread (WARN)."""
    passed, meta = health_verdict(_overall(tledit), "synthetic", "__all__", tledit.settings().checks)
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata=meta)


def _probe_estimates(tledit: TleditResource) -> dict[str, Estimate]:
    table, _ = read_probe(tledit.settings().home)
    return final_ppl(table)


@dg.asset_check(asset="collapse_probe", blocking=True)
def edited_trains_like_raw(tledit: TleditResource) -> dg.AssetCheckResult:
    """Collapse probe: a model trained on each edited variant is within 2 % of raw's held-out perplexity, or
    its excess is within the seed noise (ERROR: an edit that hurts training is a defect)."""
    est = _probe_estimates(tledit)
    verdicts = {v: edited_verdict(est, v) for v in est if v == "edited" or v.startswith("edited_g")}
    meta: dict = {}
    for _, m in verdicts.values():
        meta |= m
    return dg.AssetCheckResult(
        passed=all(ok for ok, _ in verdicts.values()), severity=dg.AssetCheckSeverity.ERROR, metadata=meta
    )


@dg.asset_check(asset="collapse_probe")
def synthetic_probe_collapse(tledit: TleditResource) -> dg.AssetCheckResult:
    """Collapse probe: a model trained on the synthetic baseline does worse on held-out human text than one
    trained on raw text, beyond the seed noise. Expected to warn: the collapse signal, shown, never failed."""
    passed, meta = synthetic_verdict(_probe_estimates(tledit))
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata=meta)


CHECKS = [
    every_raw_document_edited,
    edit_shares,
    every_token_scored,
    edited_keeps_the_tail,
    synthetic_collapse_signal,
    edited_health_overall,
    synthetic_collapse_overall,
    edited_trains_like_raw,
    synthetic_probe_collapse,
]
