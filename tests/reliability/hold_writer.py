"""`tledit` with one partition writer paused before its rename, so a test can SIGKILL the run mid-write.

Usage: python tests/reliability/hold_writer.py ASSET:SHARD run --home ... (the rest is `tledit`'s arguments).
The pause lives here, in the tests, not in the engine: `os.replace` is wrapped for this process only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def clean_env() -> dict[str, str]:
    """This environment without TLEDIT_* / DAGSTER_* settings, offline, with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TLEDIT_", "DAGSTER_"))}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def start_held(held: str, args: list[str], lake: Path) -> subprocess.Popen:
    """`tledit ARGS` with the writer of `held` (ASSET:SHARD) paused; returns once it holds its temporary file.

    Waits up to 5 minutes (a busy machine); the process is still running when this returns.
    """
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), held, *args],
        cwd=REPO,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    asset, shard = held.split(":")
    folder = lake / asset / f"shard={shard}"
    for _ in range(3000):
        if proc.poll() is not None or (folder.exists() and any(f.name.endswith(".tmp") for f in folder.iterdir())):
            break
        time.sleep(0.1)
    if proc.poll() is not None:
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        raise AssertionError(f"the held run ended before writing {held}: {out}")
    return proc


def main() -> int:
    asset, shard = sys.argv[1].split(":")
    real_replace = os.replace

    def held_replace(src, dst, *args, **kwargs):
        dst = Path(dst)
        if dst.parent.name == f"shard={shard}" and dst.parent.parent.name == asset:
            time.sleep(600)  # the test kills the process during this pause
        return real_replace(src, dst, *args, **kwargs)

    os.replace = held_replace
    from assets.cli import main as tledit

    return tledit(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
