"""A `tledit run` killed while token_scores holds the `prior` pool slot: the next run marks the dead run
failed, frees its slot and finishes, instead of waiting for the slot forever. On PostgreSQL, shared by several
machines, the same, and a run recorded by another machine (dead pid and all) is left alone, its slot too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest

from tests.reliability.hold_writer import clean_env, start_held
from tledit_pipeline.lake import DATA_FILE, lake_root

REPO = Path(__file__).resolve().parents[2]
HELD = "token_scores:alpha"  # the partition being written (its step holds the prior slot) when the run is killed


def _prior_slots(home: Path, pool: str = "prior") -> list[str]:
    """Run ids holding a slot of the `prior` pool in the instance."""
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    try:
        return [s.run_id for s in instance.event_log_storage.get_concurrency_info(pool).claimed_slots]
    finally:
        instance.dispose()


def _another_machines_run(home: Path) -> str:
    """A STARTED run recorded by another machine, its steps' pid gone here, holding a slot of another pool."""
    from assets.dagster_internals import EngineEventData
    from assets.instance import BOOT_TAG, HOST_TAG

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    try:
        tags = {HOST_TAG: "another-machine", BOOT_TAG: "its-boot"}
        run = instance.add_run(
            dg.DagsterRun(job_name="x", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED, tags=tags)
        )
        instance.report_engine_event(f"Executing steps in process (pid: {gone.pid})", run, EngineEventData.in_process(gone.pid))
        instance.event_log_storage.set_concurrency_slots("elsewhere", 1)
        assert instance.event_log_storage.claim_concurrency_slot("elsewhere", run.run_id, "step").is_claimed
        return run.run_id
    finally:
        instance.dispose()


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
@pytest.mark.parametrize(
    "sig, storage",
    [(signal.SIGKILL, "sqlite"), (signal.SIGINT, "sqlite"), (signal.SIGKILL, "postgres")],
    ids=["SIGKILL", "SIGINT", "postgres"],
)
def test_a_killed_run_does_not_keep_the_prior_slot(tmp_path, small_source, tiny_model_dir, sig, storage, request, monkeypatch):
    home = tmp_path / "home"
    args = ["run", "--home", str(home), "--source", str(small_source), "--model", str(tiny_model_dir), "--threshold", "0.2"]
    if storage == "postgres":
        args += ["--dagster-postgres-url", request.getfixturevalue("postgres_url")]
        monkeypatch.setenv("PGPASSWORD", request.getfixturevalue("postgres_server").password)  # for this process's reads
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
    other = _another_machines_run(home) if storage == "postgres" else None

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
    if other is not None:  # another machine's run is not this machine's to recover
        assert statuses.pop(other) == dg.DagsterRunStatus.STARTED and other[:8] not in out
        assert _prior_slots(home, "elsewhere") == [other]
    assert dg.DagsterRunStatus.STARTED not in statuses.values()
    if dead is not None:
        assert statuses[dead] == dg.DagsterRunStatus.FAILURE
        assert f"run {dead[:8]}" in out  # the recovery is reported
