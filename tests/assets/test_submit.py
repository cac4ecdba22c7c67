"""`tledit run --submit`: the plan goes to the instance (SQLite, or PostgreSQL) as a backfill and a real `dagster-daemon` runs it
(backfill loop, queued run coordinator, run launcher), started and stopped by the test."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from assets.cli import main
from assets.dagster_internals import BulkActionStatus

REPO = Path(__file__).resolve().parents[2]
# `dagster-daemon run`, with the backfill loop's pause cut from 30 s (Dagster's DEFAULT_DAEMON_INTERVAL_SECONDS,
# which no setting changes) to 2 s: the test then waits for the backfill's runs, not for the loop's ticks.
DAEMON = """
import sys

import dagster._daemon.controller
from dagster._daemon.cli import main

dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS = 2
sys.argv[0] = "dagster-daemon"
sys.exit(main())
"""
DONE = {
    BulkActionStatus.COMPLETED_SUCCESS,
    BulkActionStatus.COMPLETED_FAILED,
    BulkActionStatus.FAILED,
    BulkActionStatus.CANCELED,
    BulkActionStatus.COMPLETED,
}


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_submit_hands_the_plan_to_a_real_daemon(storage, tmp_path, small_source, tiny_model_dir, capsys, monkeypatch, request):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    args = ["--home", str(home), "--source", str(small_source), "--model", str(tiny_model_dir)]
    args += ["--synthetic-sample", "1.0", "--max-new-tokens", "8", "--submit"]
    if storage == "postgres":  # the daemon reads the URL from dagster.yaml and the password from PGPASSWORD
        args += ["--dagster-postgres-url", request.getfixturevalue("postgres_url")]
        monkeypatch.setenv("PGPASSWORD", request.getfixturevalue("postgres_server").password)
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    assert "plan: 2 of 2 shard(s) missing or stale" in out and "submitted backfill " in out
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    assert ("Postgres" in type(instance.run_storage).__name__) == (storage == "postgres")
    (backfill,) = instance.get_backfills()
    assert backfill.status == BulkActionStatus.REQUESTED and not instance.get_runs()  # nothing ran in process

    env = dict(os.environ) | {"DAGSTER_HOME": str(home / "dagster_home"), "TLEDIT_HOME": str(home)}
    log = tmp_path / "daemon.log"
    with open(log, "w") as fh:
        daemon = subprocess.Popen(
            [sys.executable, "-c", DAEMON, "run", "-w", str(REPO / "workspace.yaml")],
            cwd=REPO,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.time() + 300
        while instance.get_backfill(backfill.backfill_id).status not in DONE:
            assert daemon.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, f"backfill not done in 300 s: {log.read_text()[-3000:]}"
            time.sleep(2)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)  # the daemon, its code server and any run worker
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
    assert instance.get_backfill(backfill.backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS, log.read_text()[-3000:]
    if storage == "postgres":
        assert request.getfixturevalue("postgres_server").password not in log.read_text()
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
    assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    for asset in ("raw_corpus", "token_scores", "edited_corpus", "synthetic_corpus", "ngram_profile"):
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {"alpha", "beta"}
    assert instance.get_latest_materialization_event(dg.AssetKey("distribution_health")) is not None
    # What the daemon did is what `tledit run` would have done: nothing is left.
    assert main(["run", "--home", str(home)]) == 0
    assert "plan: 0 of 2 shard(s) missing or stale" in capsys.readouterr().out
