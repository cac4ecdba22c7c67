"""The Dagster instance on a real PostgreSQL server (tests/postgres.py): two runs at once, the whole graph, a
threshold backfill without the prior, a changed shard refreshing only itself, the plan from the indexes (and
the same plan without them), and dead-run recovery that never touches another machine's run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest

from assets import staleness
from assets.cli import main
from assets.dagster_internals import EngineEventData
from assets.definitions import build_defs
from assets.instance import BOOT_TAG, HOST_TAG, IndexedEventLog, owner_tags, prepare_instance, recover_dead_runs
from assets.partitions import PER_SHARD
from tests.assets.test_staleness import REFUSE_IN_STEP_PROCESSES
from tests.conftest import THREE_SHARDS as SHARDS
from tests.conftest import plan_from_indexes, write_jsonl
from tests.postgres import SECRET
from tledit_pipeline.settings import Settings
from tledit_pipeline.source import discover_shards

ROOT = Path(__file__).resolve().parents[2]


def _run_apart(home: Path, machine: Path, url: str, shards: list[str], path: str) -> subprocess.Popen:
    """`tledit run` on `shards` in a process of its own, with its own Dagster home (another machine)."""
    args = ["run", "--home", str(home), "--dagster-home", str(machine), "--dagster-postgres-url", url]
    args += ["--threshold", "0.5", "--apart-from-shards", "0", *(f"--shard={k}" for k in shards)]
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "PGPASSWORD")}
    env.update(PYTHONPATH=path, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.Popen(
        [sys.executable, "-m", "assets.cli", *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_moved_home_concurrent_backfills_and_one_changed_shard_on_postgres(
    tmp_path, three_shards, tiny_model_dir, postgres_url, capsys, monkeypatch
):
    """A local SQLite home moved to PostgreSQL (nothing re-scored), then two `tledit run`s at once on different
    shards, as two machines would (each its own Dagster home, one instance, one lake): a threshold backfill with
    the prior refused; then one changed shard refreshing only itself, the whole graph, on PostgreSQL."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    home = tmp_path / "home"
    args = ["run", "--home", str(home), "--source", str(three_shards), "--model", str(tiny_model_dir)]
    assert main([*args, "--synthetic-sample", "1.0", "--max-new-tokens", "8"]) == 0
    capsys.readouterr()

    # The move: runs, events and shards copied; every shard stays current, the health table too.
    assert main(["move-instance", "--home", str(home), "--dagster-postgres-url", postgres_url]) == 0
    out = capsys.readouterr().out
    assert "moved 2 run(s)" in out and SECRET not in out
    yaml = (home / "dagster_home" / "dagster.yaml").read_text()
    assert "IndexedPostgresEventLogStorage" in yaml and "PostgresRunStorage" in yaml and "base_dir" not in yaml
    monkeypatch.setenv("PGPASSWORD", SECRET)  # from here the URL comes from settings.json, without its password
    assert main(["run", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "plan: 0 of 3 shard(s) missing or stale, 3 up to date" in out and "distribution_health: up to date" in out

    # Two machines at once, a threshold backfill each, the prior refused in every process they start.
    forbid = tmp_path / "forbid"
    forbid.mkdir()
    (forbid / "sitecustomize.py").write_text(REFUSE_IN_STEP_PROCESSES)
    path = os.pathsep.join((str(forbid), str(ROOT)))
    procs = [
        _run_apart(home, tmp_path / f"machine-{i}", postgres_url, keys, path) for i, keys in enumerate((["s0"], ["s1", "s2"]))
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert "lock" not in (out + err).lower() and "ToEdit run complete" in out
        assert SECRET not in out + err
    assert "[run 1/1] s0: materializing edited_corpus, ngram_profile" in outputs[0][0]
    assert "[run 1/1] 2 shards s1 .. s2: materializing edited_corpus, ngram_profile" in outputs[1][0]
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    assert type(instance.event_log_storage).__name__ == "IndexedPostgresEventLogStorage"
    for asset in PER_SHARD:  # nothing lost: every shard of every asset, the moved and the new
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(SHARDS)
    edited = instance.fetch_materializations(dg.AssetKey("edited_corpus"), limit=10).records
    assert sorted(r.partition_key for r in edited) == sorted(SHARDS * 2)
    scores = instance.fetch_materializations(dg.AssetKey("token_scores"), limit=10).records
    assert sorted(r.partition_key for r in scores) == SHARDS  # nothing rescored
    runs = instance.get_runs()
    assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert all(
        {k: r.tags[k] for k in (HOST_TAG, BOOT_TAG)} == owner_tags() for r in runs if r.tags.get("dagster/backfill") is None
    )

    # One changed source file: the plan (from the indexes, no record read) redoes its shard only; without the
    # indexed tags (a partition recorded without them) it reads the records and plans the same.
    write_jsonl(three_shards / "s1.jsonl", [{"text": "Out, damned spot! Out, I say! One, two: why, then, 'tis time to do't."}])
    settings = Settings.load(env={}, home=str(home))
    assert settings.dagster_postgres_url == postgres_url.replace(f":{SECRET}@", "@")
    graph = build_defs(settings).resolve_asset_graph()
    found = discover_shards(settings.source, settings.home)
    indexed = plan_from_indexes(instance, graph, settings, found, monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(
            IndexedEventLog,
            "get_asset_tags_to_index",
            lambda self, keys: super(IndexedEventLog, self).get_asset_tags_to_index(keys),
        )
        assert staleness.plan(instance, graph, settings, found) == indexed
    assert main(["run", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "[run 1/1] s1: materializing raw_corpus" in out and "plan: 1 of 3 shard(s) missing or stale" in out
    scores = instance.fetch_materializations(dg.AssetKey("token_scores"), limit=10).records
    assert sorted(r.partition_key for r in scores) == ["s0", "s1", "s1", "s2"]
    instance.dispose()


def _started_run(instance: dg.DagsterInstance, tags: dict[str, str], pid: int, status=dg.DagsterRunStatus.STARTED) -> str:
    """A run with the given owner tags whose steps ran in process `pid` (Dagster's own event), holding a `prior` slot."""
    run = instance.add_run(dg.DagsterRun(job_name="noop", run_id=str(uuid.uuid4()), status=status, tags=tags))
    instance.report_engine_event(f"Executing steps in process (pid: {pid})", run, EngineEventData.in_process(pid))
    assert instance.event_log_storage.claim_concurrency_slot("prior", run.run_id, "token_scores").is_claimed
    return run.run_id


def test_recovery_touches_only_this_machines_dead_runs(postgres_url, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    instance = prepare_instance(Settings(home=tmp_path / "home", dagster_postgres_url=postgres_url))
    instance.event_log_storage.set_concurrency_slots("prior", 6)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    ours = _started_run(instance, owner_tags(), gone.pid)
    other = _started_run(instance, {HOST_TAG: "another-machine", BOOT_TAG: owner_tags()[BOOT_TAG]}, gone.pid)
    rebooted = _started_run(instance, owner_tags() | {BOOT_TAG: "an-earlier-boot"}, os.getpid())
    ui = _started_run(instance, {}, gone.pid)  # launched from the UI or a daemon: no owner, the daemon watches it
    alive = _started_run(instance, owner_tags(), os.getpid())
    elsewhere = {HOST_TAG: "another-machine", BOOT_TAG: "its-boot"}
    other_done = _started_run(instance, elsewhere, gone.pid, dg.DagsterRunStatus.SUCCESS)  # its slot: its machine's to free
    lines = recover_dead_runs(instance)
    status = {r.run_id: r.status for r in instance.get_runs()}
    failed = {ours, rebooted}
    assert {r for r, s in status.items() if s == dg.DagsterRunStatus.FAILURE} == failed
    assert all(status[r] == dg.DagsterRunStatus.STARTED for r in (other, ui, alive))
    holders = {s.run_id for s in instance.event_log_storage.get_concurrency_info("prior").claimed_slots}
    assert holders == {other, ui, alive, other_done}  # the dead runs' slots are freed, nobody else's
    assert sorted(line[4:12] for line in lines if "marked failed" in line) == sorted(r[:8] for r in failed)
    instance.dispose()
