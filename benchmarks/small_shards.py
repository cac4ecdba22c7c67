"""`python -m benchmarks.small_shards`: the health checks on many tiny shards, where a false failure shows.

It writes N shards (default 300) of two short real documents each (the packaged fortunes the demo uses, those
of at most 160 characters: about 50 prior tokens a shard, an SFT set split into many files), runs `tledit run` with the bundled prior
at p = 0.99, then a `--threshold 0.95` backfill, each in a fresh process, exactly as a user does. After each
run it reads every shard's stored health rows (the lake's `shard_health`, what the blocking check
`edited_keeps_the_tail` judges) and counts the shards that fail

- the rule in tledit_pipeline/verdict.py (count-aware tail and JS bounds): what the check reports;
- the absolute JS bound of before (the same rows without their `hashed_features` count: main's rule).

It also counts the shards `tledit run` itself reported FAILED and judges the whole corpus (`__all__` rows of
`distribution_health`, the check `edited_health_overall`). A false failure is a shard failed by an edit that
passes on the whole corpus. The synthetic baseline is cut to a sliver (it is not what is judged here). It
prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from benchmarks.scale import REPO, sample_documents, write_corpus
from tledit_pipeline.lake import read_partition
from tledit_pipeline.settings import CheckSettings
from tledit_pipeline.verdict import health_verdict

MAX_CHARS = 160  # short documents: two make a shard of about 50 tokens (median 48 measured)
THRESHOLDS = (0.99, 0.95)  # the first run, then a backfill (re-edit from stored scores)
# The baseline is not judged here: a sliver of it, short, so the run's time is the edit's.
BASELINE = ["--synthetic-sample", "0.01", "--max-new-tokens", "8"]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
        return f"{os.cpu_count()} x {name or platform.processor()}"
    except OSError:
        return f"{os.cpu_count()} x {platform.processor()}"


def tledit_run(argv: list[str], env: dict[str, str], log: Path) -> tuple[int, float, list[str]]:
    """Exit code, wall seconds and the FAILED lines of one `tledit run` in a fresh process."""
    t = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(
            [sys.executable, "-m", "assets.cli", *argv], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    failed = [line for line in log.read_text().splitlines() if ": FAILED: " in line]
    return code, time.perf_counter() - t, failed


def judge(home: Path, keys: list[str], checks: CheckSettings) -> dict[str, Any]:
    """Each shard's stored rows judged by the count-aware rule and by the absolute JS bound of before."""
    rows = pl.concat([pl.from_arrow(read_partition(home, "shard_health", k)) for k in keys])  # type: ignore[misc]
    value = {(r["variant"], r["shard"], r["metric"]): r["value"] for r in rows.iter_rows(named=True)}
    now: list[str] = []
    before: list[str] = []
    before_js_only: list[str] = []
    for k in keys:
        ok, _, _ = health_verdict(rows, "edited", k, checks)
        legacy = rows.filter((pl.col("shard") == k) & (pl.col("metric") != "hashed_features"))
        ok_before, meta, _ = health_verdict(legacy, "edited", k, checks)
        now += [] if ok else [k]
        before += [] if ok_before else [k]
        tail_ok, _, _ = health_verdict(legacy.filter(pl.col("metric") != "js_divergence_vs_raw"), "edited", k, checks)
        before_js_only += [k] if tail_ok and not ok_before else []

    def per_shard(variant: str, metric: str) -> list[float]:
        return [value.get((variant, k, metric), 0.0) for k in keys]

    js = per_shard("edited", "js_divergence_vs_raw")
    tokens = per_shard("raw", "scored_tokens")
    changed = [
        c * n for c, n in zip(per_shard("edited", "changed_share"), per_shard("edited", "edit_scored_tokens"), strict=True)
    ]
    features = per_shard("raw", "hashed_features")
    with duckdb.connect(str(home / "tledit.duckdb"), read_only=True) as con:
        overall = pl.from_arrow(con.execute("SELECT * FROM distribution_health WHERE shard = '__all__'").to_arrow_table())
    ok_all, meta_all, _ = health_verdict(overall, "edited", "__all__", checks)  # type: ignore[arg-type]
    whole = {r["metric"]: r["value"] for r in overall.filter(pl.col("variant") == "edited").iter_rows(named=True)}  # type: ignore[union-attr]
    return {
        "failed_now": len(now),
        "failed_before": len(before),
        "failed_before_on_js_alone": len(before_js_only),
        "examples_before": before[:5],
        "examples_now": now[:5],
        "shards_with_changes": sum(c > 0 for c in changed),
        "changed_tokens_max": round(max(changed)),
        "scored_tokens_median": sorted(tokens)[len(tokens) // 2],
        "hashed_features_median": sorted(features)[len(features) // 2],
        "js_max": round(max(js), 4),
        "whole_corpus_passed": ok_all,
        "whole_corpus_js": meta_all.get("js_divergence_vs_raw"),
        "whole_corpus_coverage_ratio": meta_all.get("coverage_ratio"),
        "whole_corpus_changed_share": whole.get("changed_share"),
        "whole_corpus_eligible_share": whole.get("eligible_share"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.small_shards", description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=300, help="how many two-document shards (default 300)")
    parser.add_argument("--max-chars", type=int, default=MAX_CHARS, help=f"longest document, characters (default {MAX_CHARS})")
    parser.add_argument("--work", type=Path, help="folder for the corpus, home and logs (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="tledit-small-shards-"))
    source, home = work / "source", work / "home"
    shutil.rmtree(home, ignore_errors=True)
    docs = [d for d in sample_documents() if len(d) <= args.max_chars]
    keys = [p.stem for p in write_corpus(source, args.shards, docs)]
    env = os.environ | {"TLEDIT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"), "HF_HUB_OFFLINE": "1"}
    checks = CheckSettings()
    results: dict[str, Any] = {"shards": args.shards, "documents_per_shard": 2, "cpu": cpu_model(), "runs": {}}
    for i, p in enumerate(THRESHOLDS):
        argv_run = ["run", "--home", str(home), "--threshold", str(p)]
        argv_run += ["--source", str(source), *BASELINE] if i == 0 else []
        code, wall, failed = tledit_run(argv_run, env, work / f"run-p{p}.log")
        r = {"exit_code": code, "wall_s": round(wall, 1), "reported_failed": len(failed), "failed_lines": failed[:3]}
        r |= judge(home, keys, checks)
        results["runs"][str(p)] = r
        print(
            f"p={p}: exit {code} in {wall:.0f}s; tledit run reported {len(failed)} failed shard(s); "
            f"rule now fails {r['failed_now']}, the absolute JS bound of before {r['failed_before']} "
            f"(whole corpus passes: {r['whole_corpus_passed']})",
            flush=True,
        )
    print()
    print(f"{args.shards} shards x 2 real documents, bundled prior, {results['cpu']}")
    header = [
        "p",
        "exit",
        "reported",
        "fail now",
        "fail before",
        "changed shards",
        "max changed",
        "median tokens",
        "median features",
        "max JS",
        "corpus JS",
        "corpus ok",
    ]
    print(" | ".join(header))
    for p, r in results["runs"].items():
        cells = [
            p,
            r["exit_code"],
            r["reported_failed"],
            r["failed_now"],
            r["failed_before"],
            r["shards_with_changes"],
            r["changed_tokens_max"],
        ]
        cells += [
            int(r["scored_tokens_median"]),
            int(r["hashed_features_median"]),
            r["js_max"],
            r["whole_corpus_js"],
            r["whole_corpus_passed"],
        ]
        print(" | ".join(str(c) for c in cells))
    results["false_failures"] = sum(r["failed_now"] for r in results["runs"].values() if r["whole_corpus_passed"])
    print(json.dumps(results))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
