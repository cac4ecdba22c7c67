"""A `tledit run` killed while token_scores holds the `prior` pool slot: the next run marks the dead run
failed, frees its slot and finishes, instead of waiting for the slot forever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from tests.reliability.hold_writer import clean_env, start_held
from tledit_pipeline.lake import DATA_FILE, lake_root

REPO = Path(__file__).resolve().parents[2]
HELD = "token_scores:alpha"  # the partition being written (its step holds the prior slot) when the run is killed


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
    proc = start_held(HELD, args, lake_root(home))  # token_scores is writing: its prior slot is claimed
    asset, shard = HELD.split(":")
    try:
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
    again = subprocess.run(
        [sys.executable, "-m", "assets.cli", *args], cwd=REPO, env=clean_env(), capture_output=True, timeout=600
    )
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
