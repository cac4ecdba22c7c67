"""The edit sweep's cost against one threshold backfill (issue: five thresholds at most 3x one backfill).

    python -m benchmarks.sweep [--home DIR] [--thresholds 0.5,0.7,0.9,0.95,0.99] [--repeat 3]

On a data directory where `tledit run` has run (else it runs the demo there first, `--source sample`), it
times, in this process and against the same Dagster instance:

- a threshold backfill: `tledit run --threshold p` with a p the lake was not edited with (edited_corpus and
  ngram_profile of every shard, their checks, distribution_health), alternating between two values so
  each repeat is a real re-edit;
- a sweep: `tledit sweep --thresholds ... --force` (every point of every shard, and edit_sweep).

Neither scores: both read stored token_scores. Prints a table, then one JSON line with the medians and
their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import time
from pathlib import Path

from assets.cli import main as tledit


def _timed(argv: list[str]) -> float:
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        rc = tledit(argv)
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"tledit {' '.join(argv)} failed ({rc}):\n{out.getvalue()[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default="data/bench-sweep", help="data directory (the demo is run there when it has no run)")
    ap.add_argument("--thresholds", default="0.5,0.7,0.9,0.95,0.99")
    ap.add_argument("--backfill", default="0.9,0.95", help="the two thresholds the backfills alternate between")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    home = Path(args.home)
    if not (home / "settings.json").exists():
        print(f"no run in {home}: running the demo there first (tledit run --source sample)", flush=True)
        if tledit(["run", "--home", str(home), "--source", "sample"]) != 0:
            return 1
    base = json.loads((home / "settings.json").read_text())["threshold"]
    alternate = [float(x) for x in args.backfill.split(",")]
    backfill, sweep = [], []
    first_sweep = _timed(["sweep", "--home", str(home), "--thresholds", args.thresholds])
    for i in range(args.repeat):
        p = alternate[i % 2]
        backfill.append(_timed(["run", "--home", str(home), "--threshold", str(p)]))
        sweep.append(_timed(["sweep", "--home", str(home), "--thresholds", args.thresholds, "--force"]))
        print(f"repeat {i + 1}: backfill to p={p} {backfill[-1]:.2f}s, sweep of {args.thresholds} {sweep[-1]:.2f}s", flush=True)
    _timed(["run", "--home", str(home), "--threshold", str(base)])  # the data directory as it was
    b, s = statistics.median(backfill), statistics.median(sweep)
    points = len(args.thresholds.split(","))
    print(f"{'what':<40} {'median s':>9}  all")
    print(f"{'one threshold backfill':<40} {b:>9.2f}  {', '.join(f'{x:.2f}' for x in backfill)}")
    print(f"{f'sweep of {points} thresholds (--force)':<40} {s:>9.2f}  {', '.join(f'{x:.2f}' for x in sweep)}")
    print(f"{'first sweep (registers the points)':<40} {first_sweep:>9.2f}")
    print(f"ratio sweep / backfill: {s / b:.2f}x (target <= 3x)")
    print(
        json.dumps(
            {
                "backfill_s": round(b, 3),
                "sweep_s": round(s, 3),
                "first_sweep_s": round(first_sweep, 3),
                "ratio": round(s / b, 3),
                "points": points,
                "repeat": args.repeat,
                "machine": platform.processor() or platform.machine(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
