"""The `ray` engine against a real two-node Ray cluster on loopback (tests/ray_cluster.py, one per session).

Each node has one logical GPU, so the scoring actors are GPU actors (num_gpus=1), one per node, computing
on the CPU with as many threads as an in-process run: the bytes must equal the local engine's. `tledit run`
is the driver, in a process of its own, as a user runs it. The whole graph with the lake on the S3 server;
prior loads == actors, not shards; a killed driver's rerun redoes only unfinished shards; the bad-address and
unreachable-lake errors; an actor and then a whole worker node killed mid-shard (last: the node stays gone).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from assets.cli import main
from benchmarks.cluster import free_port
from tests.conftest import write_jsonl
from tests.ray_cluster import ray_cluster  # noqa: F401  (the session's cluster)
from tests.s3 import subprocess_env
from tledit_pipeline.lake import DATA_FILE
from tledit_pipeline.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # one cluster per session: one xdist worker

REPO = Path(__file__).resolve().parents[2]
PRIOR_ASSETS = ("token_scores", "synthetic_corpus")
COMPARED = ("raw_corpus", "token_scores", "edited_corpus", "synthetic_corpus")
SHARDS = ("s0", "s1", "s2", "s3")
LINES = [
    "When shall we three meet again? In thunder, lightning, or in rain?",
    "Fair is foul, and foul is fair: hover through the fog and filthy air.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "Is this a dagger which I see before me, the handle toward my hand?",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u65e5\u672c\u8a9e \U0001f600 done.",
]


# Session-scoped: under xdist other modules' tests run in between, which would rebuild a module's fixtures.
@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """Four shards of real text (one long document each: several scoring windows)."""
    src = tmp_path_factory.mktemp("ray-corpus")
    for i, key in enumerate(SHARDS):
        docs = [{"text": f"{LINES[(i + j) % len(LINES)]} {LINES[j % len(LINES)]}", "n": j} for j in range(6)]
        docs.append({"text": " ".join(LINES[i:] + LINES[:i]) * 6, "n": 99})
        write_jsonl(src / f"{key}.jsonl", docs)
    return src


def _flags(model: Path, source: str, home: str, *extra: str) -> list[str]:
    return ["--home", home, "--source", source, "--model", str(model), "--threshold", "0.2", *extra]


def _ray_flags(cluster, *extra: str) -> list[str]:
    # Two threads per actor, as the in-process run uses on these two cores: same reduction order, same bytes.
    return ["--engine", "ray", "--ray-address", cluster.address, "--ray-threads", "2", *extra]


def _env(cluster, tmp_path: Path, endpoint: str) -> dict[str, str]:
    """A driver's environment, with the cluster's cache folder: dtype `auto` is a timed probe kept there, so the
    drivers and the actors share one answer instead of each measuring its own under the machine's load."""
    return subprocess_env(tmp_path, endpoint) | {"XDG_CACHE_HOME": cluster.env["XDG_CACHE_HOME"]}


def _tledit(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "assets.cli", "run", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def _lake(read, assets=COMPARED) -> dict[str, bytes]:
    return {f"{a}/{k}": read(f"lake/{a}/shard={k}/{DATA_FILE}") for a in assets for k in SHARDS}


def _placements(log: str) -> list[tuple[str, str, str]]:
    """(shard, asset, node) of every shard a scoring actor did, from the run's progress lines."""
    return re.findall(r"\[(\w+)\] (token_scores|synthetic_corpus) on node (\S+) ", log)


def _materializations(instance_dir: Path, asset: str) -> list[str]:
    """The shard of every materialization of `asset` in the instance, one entry per event."""
    instance = dg.DagsterInstance.from_config(str(instance_dir))
    try:
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
        return sorted(r.partition_key for r in records)
    finally:
        instance.dispose()


@pytest.fixture(scope="session")
def reference(ray_cluster, corpus, tiny_model_dir, tmp_path_factory) -> Path:  # noqa: F811
    """An uninterrupted run of the local engine: the bytes every Ray run must reproduce."""
    home = tmp_path_factory.mktemp("ray-reference") / "home"
    env = _env(ray_cluster, home.parent, "http://127.0.0.1:9")
    rc, log = _finish(_tledit(_flags(tiny_model_dir, str(corpus), str(home)), env))
    assert rc == 0, log
    return home


def test_whole_graph_through_ray_with_the_lake_on_s3(ray_cluster, s3, corpus, reference, tiny_model_dir, tmp_path):  # noqa: F811
    source = s3.upload_folder(corpus, "corpus")
    home = s3.url("runs/ray")
    env = _env(ray_cluster, tmp_path, s3.server.endpoint)
    rc, log = _finish(_tledit(_flags(tiny_model_dir, source, home, *_ray_flags(ray_cluster)), env))
    assert rc == 0, log
    assert "ToEdit run complete" in log

    # Every shard of both prior steps was done by an actor, once, on the cluster's nodes.
    placed = _placements(log)
    assert sorted((k, a) for k, a, _ in placed) == sorted((k, a) for k in SHARDS for a in PRIOR_ASSETS), log
    assert {node for *_, node in placed} <= {"127.0.0.2", "127.0.0.3"}
    # The prior was loaded once per actor (two: one per logical GPU), not once per shard (eight).
    loads = [int(n) for n in re.findall(r"prior loaded (\d+) time", log)]
    assert loads and 1 <= loads[-1] <= 2, log
    # One dtype for the whole pool, whichever node measured it: a shard's bytes never depend on its node.
    assert len(set(re.findall(r"ray: every actor scores in (\w+)", log))) == 1, log

    # The lake on the server holds exactly the local engine's bytes.
    ray_lake = _lake(lambda key: s3.fs.cat_file(f"{s3.bucket}/runs/ray/{key}"))
    assert ray_lake == _lake(lambda key: (reference / key).read_bytes())
    assert not [k for k in s3.keys("runs/ray") if k.endswith(".tmp")]

    # Dagster recorded one materialization per shard, with the metadata the local engine records.
    ray_instance = Settings.from_env({"TLEDIT_HOME": home}).instance_dir
    for asset in PRIOR_ASSETS + ("edited_corpus",):
        assert _materializations(ray_instance, asset) == list(SHARDS)
    local = dg.DagsterInstance.from_config(str(reference / "dagster_home"))
    remote = dg.DagsterInstance.from_config(str(ray_instance))
    try:
        for asset in PRIOR_ASSETS:
            here = local.get_latest_materialization_event(dg.AssetKey(asset)).asset_materialization.metadata
            there = remote.get_latest_materialization_event(dg.AssetKey(asset)).asset_materialization.metadata
            assert set(here) == set(there)
            assert type(here["probability_histogram"]) is type(there["probability_histogram"])
    finally:
        local.dispose()
        remote.dispose()


def test_cluster_errors_are_one_line_and_exit_2(ray_cluster, corpus, tiny_model_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
    from tledit_pipeline import cluster

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    base = _flags(tiny_model_dir, str(corpus), str(tmp_path / "home"))
    closed = f"127.0.0.1:{free_port()}"
    try:
        # Nothing answers at the address.
        assert main(["run", *base, "--engine", "ray", "--ray-address", closed]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and closed in err and "ray_address" in err
        # A local home on a two-node cluster, without --shared-home: the worker node could not reach the lake.
        assert main(["run", *base, "--engine", "ray", "--ray-address", ray_cluster.address]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "2 nodes" in err and "--shared-home" in err
        # A lake on an object store that does not answer.
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        remote = _flags(tiny_model_dir, str(corpus), "s3://no-such-lake/runs")
        assert main(["run", *remote, "--engine", "ray", "--ray-address", ray_cluster.address]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "no-such-lake" in err
    finally:
        cluster.shutdown()
    assert not (tmp_path / "home" / "lake").exists()


def _wait_gone(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} still alive")


def test_a_killed_driver_actor_and_worker_node_lose_nothing(ray_cluster, corpus, reference, tiny_model_dir, tmp_path):  # noqa: F811
    """A driver killed mid-run, then its rerun with an actor and the whole worker node killed mid-shard: every
    shard once, the finished ones not redone, the bytes of an uninterrupted local run. Last: the node stays gone."""
    home = tmp_path / "home"
    env = _env(ray_cluster, tmp_path, "http://127.0.0.1:9")
    args = _flags(tiny_model_dir, str(corpus), str(home), *_ray_flags(ray_cluster, "--shared-home"))

    # 1. The driver is killed while one actor holds a written, not yet visible partition and another shard is done.
    ray_cluster.hold("any")
    driver = _tledit(args, env)
    try:
        held = ray_cluster.held_pid("any")
        receipts = home / "receipts"
        deadline = time.monotonic() + 180
        while not (receipts.exists() and any(receipts.rglob("*.json"))):
            assert time.monotonic() < deadline and driver.poll() is None, "no shard finished beside the held one"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.communicate()
    _wait_gone(held)  # Ray ends a dead driver's actors, the held one too
    time.sleep(1.0)
    finished = sorted(f"{p.parent.name}/{p.stem.removeprefix('shard=')}" for p in receipts.rglob("*.json"))

    # 2. The rerun: the head's actor process killed mid-shard, and the whole worker node while its actor is, in
    # the order they pause (with one shard left in a step, the other actor gets work only after the first kill).
    ray_cluster.hold("head")
    ray_cluster.hold("worker")
    driver = _tledit(args, env)
    try:
        waiting = {"head", "worker"}
        while waiting:
            node, pid = ray_cluster.first_held(*sorted(waiting))
            waiting.discard(node)
            if node == "head":
                os.kill(pid, signal.SIGKILL)
            else:
                ray_cluster.kill("worker")
        rc, log = _finish(driver)
    finally:
        driver.kill()
    assert rc == 0, log
    assert log.count("trying again on another actor") == 2, log
    reused = sorted(f"{a}/{k}" for k, a in re.findall(r"\[(\w+)\] (\w+): finished by an unrecorded earlier run", log))
    assert reused == finished, log  # what the killed driver's run finished is not scored again
    redone = sorted(f"{a}/{k}" for k, a, _ in _placements(log))
    assert sorted(redone + finished) == sorted(f"{a}/{k}" for a in PRIOR_ASSETS for k in SHARDS)

    # Every shard exactly once: one materialization each, the bytes of an uninterrupted local run, no temporaries.
    for asset in PRIOR_ASSETS:
        assert _materializations(home / "dagster_home", asset) == list(SHARDS)
    assert _lake(lambda key: (home / key).read_bytes()) == _lake(lambda key: (reference / key).read_bytes())
    assert not [p for p in (home / "lake").rglob("*") if p.name.endswith(".tmp")]
