"""A `tledit run` killed while token_scores holds the `prior` pool slot: the next run marks the dead run
failed, frees its slot and finishes, instead of waiting for the slot forever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from tledit_pipeline.lake import DATA_FILE, lake_root

REPO = Path(__file__).resolve().parents[2]
HELD = "token_scores:alpha"  # the partition being written (its step holds the prior slot) when the run is killed


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TLEDIT_", "DAGSTER_"))}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _prior_slots(home: Path) -> list[str]:
    """Run ids holding a slot of the `prior` pool in the instance."""
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    try:
        return [s.run_id for s in instance.event_log_storage.get_concurrency_info("prior").claimed_slots]
    finally:
        instance.dispose()


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_killed_run_does_not_keep_the_prior_slot(tmp_path, small_source, tiny_model_dir, sig):
    home = tmp_path / "home"
    args = ["run", "--home", str(home), "--source", str(small_source), "--model", str(tiny_model_dir), "--threshold", "0.2"]
    cmd = [sys.executable, str(REPO / "tests" / "reliability" / "hold_writer.py"), HELD, *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    asset, shard = HELD.split(":")
    folder = lake_root(home) / asset / f"shard={shard}"
    try:
        # Wait (up to 5 minutes on a busy machine) until token_scores is writing, its slot claimed.
        for _ in range(3000):
            if proc.poll() is not None or (folder.exists() and any(f.name.endswith(".tmp") for f in folder.iterdir())):
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
        os.kill(proc.pid, sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    if sig == signal.SIGKILL:
        (dead,) = _prior_slots(home)  # what made the next run wait forever: the slot is still claimed
    else:
        dead = None

    # The next run recovers the slot and finishes (a timeout here is the bug: it would wait forever).
    again = subprocess.run([sys.executable, "-m", "assets.cli", *args], cwd=REPO, env=_env(), capture_output=True, timeout=600)
    out = again.stdout.decode(errors="replace") + again.stderr.decode(errors="replace")
    assert again.returncode == 0, out
    assert "ToEdit run complete" in out
    assert _prior_slots(home) == []
    assert (lake_root(home) / "edited_corpus" / f"shard={shard}" / DATA_FILE).exists()
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    try:
        statuses = {r.run_id: r.status for r in instance.get_runs()}
    finally:
        instance.dispose()
    assert dg.DagsterRunStatus.STARTED not in statuses.values()  # the killed run is not left running
    if dead is not None:
        assert statuses[dead] == dg.DagsterRunStatus.FAILURE
        assert f"run {dead[:8]}" in out  # the recovery is reported
