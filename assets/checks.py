"""Asset checks: nothing lost between raw and edited, every token scored, and the distribution health of the
edited corpus (blocking) and of the synthetic baseline (a warning). Each can fail on a real input; what is
only reported (the eligible, changed and deleted shares) is edited_corpus's materialization metadata.

Per-shard checks run once per step over all the shards of the run (a single-run backfill) and record
one evaluation per shard, so the UI shows each shard's verdict. A failed evaluation carries a one-line
description naming the check, the shard, the measured value and the allowed one: what `tledit run` prints.
"""

from collections.abc import Callable, Iterator

import dagster as dg
import numpy as np
import polars as pl

from assets.dagster_internals import AssetCheckEvaluationTargetMaterializationData
from assets.partitions import shards
from assets.resources import TleditResource
from tledit_pipeline.database import connect
from tledit_pipeline.lake import partition_meta, read_partition
from tledit_pipeline.probe import Estimate, edited_verdict, final_ppl, read_probe, synthetic_verdict
from tledit_pipeline.settings import Settings
from tledit_pipeline.verdict import Verdict, health_verdict


def _targets(
    context: dg.AssetCheckExecutionContext, asset: str, keys: list[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The materialization each shard's evaluation is about: two queries for the whole range."""
    ak = dg.AssetKey(asset)
    ids = context.instance.event_log_storage.get_latest_storage_id_by_partition(
        ak, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=set(keys)
    )
    if not ids:
        return {}
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=ak, storage_ids=list(ids.values())), limit=len(ids)
    ).records
    return {
        r.partition_key: AssetCheckEvaluationTargetMaterializationData(
            run_id=r.run_id, storage_id=r.storage_id, timestamp=r.timestamp
        )
        for r in records
    }


# Each per-shard check's verdict by check name: the rule alone, callable on a lake without Dagster (tests).
VERDICTS: dict[str, Callable[[Settings, str], Verdict]] = {}


def shard_check(asset: str, blocking: bool = False, severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR):
    """A per-shard check from `verdict(settings, shard) -> (passed, metadata, description)`."""

    def wrap(verdict: Callable[[Settings, str], Verdict]) -> dg.AssetChecksDefinition:
        name = verdict.__name__
        VERDICTS[name] = verdict

        @dg.asset_check(asset=asset, name=name, partitions_def=shards, blocking=blocking, description=verdict.__doc__)
        def check(context: dg.AssetCheckExecutionContext, tledit: TleditResource) -> Iterator:
            s = tledit.settings()
            keys = list(context.partition_keys)
            targets = _targets(context, asset, keys)
            for key in keys:
                passed, meta, description = verdict(s, key)
                yield dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey(asset),
                    check_name=name,
                    passed=passed,
                    metadata=meta,
                    target_materialization_data=targets.get(key),
                    severity=severity,
                    description=None if passed else description,
                    blocking=blocking,
                    partition=key,
                )
            yield dg.Output(None, output_name="result")

        return check

    return wrap


@shard_check("edited_corpus", blocking=True)
def every_raw_document_edited(s: Settings, key: str) -> Verdict:
    """Each raw document has exactly one edited counterpart, and untouched documents are byte-identical."""
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
            ed_ids,
            edited.column("text").to_pylist(),
            edited.column("n_changed").to_pylist(),
            edited.column("n_deleted").to_pylist(),
        )
        if c == 0 and x == 0 and raw_text.get(d) != t
    ]
    meta = {
        "raw_documents": len(raw_text),
        "edited_documents": len(ed_ids),
        "missing": len(missing),
        "extra": len(extra),
        "duplicated": duplicated,
        "unchanged_but_different": len(altered),
        "examples": ", ".join((missing + extra + altered)[:5]),
    }
    line = (
        f"every_raw_document_edited: shard {key}: {len(missing)} missing, {len(extra)} extra, {duplicated} duplicated,"
        f" {len(altered)} unchanged but different edited documents; allowed 0 of each"
    )
    return not (missing or extra or duplicated or altered), meta, line


@shard_check("token_scores", blocking=True)
def every_token_scored(s: Settings, key: str) -> Verdict:
    """Every token has a log-prob (after the document-start token; without one, all but each document's first);
    positions are contiguous (nothing truncated)."""
    sc = read_partition(s.home, "token_scores", key, columns=["doc_id", "pos", "logprob"])
    pos = sc.column("pos").to_numpy()
    lp_null = sc.column("logprob").is_null().to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(pos == 0)
    ends = np.append(starts[1:], len(pos))
    gaps = sum(int(not np.array_equal(pos[a:b], np.arange(b - a))) for a, b in zip(starts, ends))
    first = partition_meta(s.home, "token_scores", key).get("first_scored", 1)
    unscored = int((lp_null & (pos >= first)).sum())
    raw_docs = read_partition(s.home, "raw_corpus", key, columns=["doc_id"]).num_rows
    meta = {
        "documents": len(starts),
        "raw_documents": raw_docs,
        "tokens": len(pos),
        "unscored_tokens": unscored,
        "documents_with_gaps": gaps,
        "first_scored_position": first,
    }
    line = (
        f"every_token_scored: shard {key}: {unscored} unscored tokens, {gaps} documents with gaps, {len(starts)} of {raw_docs}"
        " documents scored; allowed 0, 0 and all"
    )
    return unscored == 0 and gaps == 0 and len(starts) == raw_docs, meta, line


def _stored_health(s: Settings, key: str) -> pl.DataFrame:
    """The shard's rows of distribution_health, stored by ngram_profile."""
    return pl.from_arrow(read_partition(s.home, "shard_health", key))


@shard_check("ngram_profile", blocking=True)
def edited_keeps_the_tail(s: Settings, key: str) -> Verdict:
    """Per shard: edited keeps at least min_tail_coverage of raw's rare bigrams and its hashed features stay
    within max_js_divergence of raw, each judged against what a shard of its size can show (the Wilson bounds
    on its rare bigrams and hashed features: tledit_pipeline/verdict.py), so a two-document shard passes a
    changed word and fails a replaced text. ERROR and blocking: a bad edit stops here."""
    passed, meta, problems = health_verdict(_stored_health(s, key), "edited", key, s.checks)
    return passed, meta, f"edited_keeps_the_tail: shard {key}: {problems}"


@shard_check("ngram_profile", severity=dg.AssetCheckSeverity.WARN)
def synthetic_collapse_signal(s: Settings, key: str) -> Verdict:
    """Per shard: the synthetic baseline against the same thresholds. Expected to warn: that is the collapse
    signal (lost tail, shifted features) the edited corpus is meant to avoid. Never fails the run."""
    health = _stored_health(s, key)
    if not health.filter(pl.col("variant") == "synthetic").height:
        return True, {"note": "no documents of this shard are in the baseline's sample"}, ""
    passed, meta, problems = health_verdict(health, "synthetic", key, s.checks)
    return passed, meta, f"synthetic_collapse_signal: shard {key}: {problems}"


def _overall(tledit: TleditResource) -> pl.DataFrame:
    with connect(tledit.settings().home, read_only=True) as con:
        return pl.from_arrow(con.execute("SELECT * FROM distribution_health WHERE shard = '__all__'").to_arrow_table())


@dg.asset_check(asset="distribution_health")
def edited_health_overall(tledit: TleditResource) -> dg.AssetCheckResult:
    """Whole corpus: the edited corpus within the thresholds of raw (ERROR)."""
    passed, meta, problems = health_verdict(_overall(tledit), "edited", "__all__", tledit.settings().checks)
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=meta,
        description=None if passed else f"edited_health_overall: whole corpus: {problems}",
    )


@dg.asset_check(asset="distribution_health")
def synthetic_collapse_overall(tledit: TleditResource) -> dg.AssetCheckResult:
    """Whole corpus: the synthetic baseline against the same thresholds, with its perplexity spread (WARN)."""
    passed, meta, problems = health_verdict(_overall(tledit), "synthetic", "__all__", tledit.settings().checks)
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=meta,
        description=None if passed else f"synthetic_collapse_overall: whole corpus: {problems}",
    )


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
    return dg.AssetCheckResult(passed=all(ok for ok, _ in verdicts.values()), severity=dg.AssetCheckSeverity.ERROR, metadata=meta)


@dg.asset_check(asset="collapse_probe")
def synthetic_probe_collapse(tledit: TleditResource) -> dg.AssetCheckResult:
    """Collapse probe: a model trained on the synthetic baseline does worse on held-out human text than one
    trained on raw text, beyond the seed noise. Expected to warn: the collapse signal, shown, never failed."""
    passed, meta = synthetic_verdict(_probe_estimates(tledit))
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata=meta)


CHECKS = [
    every_raw_document_edited,
    every_token_scored,
    edited_keeps_the_tail,
    synthetic_collapse_signal,
    edited_health_overall,
    synthetic_collapse_overall,
    edited_trains_like_raw,
    synthetic_probe_collapse,
]
