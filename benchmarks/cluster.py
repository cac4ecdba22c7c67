"""`make cluster`: the demo corpus through a two-node Ray cluster on loopback, the lake on a local S3 server.

Starts everything it uses and stops exactly that (by process group, never by name): a moto S3 server on
127.0.0.1, a Ray head and a Ray worker node (`ray start`, one logical GPU each, so the scoring actors are
GPU actors as on a real GPU cluster; they compute on this machine's CPU), then runs `tledit run --engine ray`
with the lake on the server, prints which node scored which shard and how many times the prior was loaded,
and stops it all. LocalCluster is also what the tests (tests/ray_cluster.py) and `make scale SCALE_ARGS="--engine
ray"` start.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Loopback addresses other than 127.0.0.1: Ray replaces 127.0.0.1 (and only it) by the machine's interface
# address, so nodes started with it would advertise, and talk over, that interface.
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
# The head notices a dead node within about a second (Ray's default is tens of seconds).
FAST_HEALTH = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "300",
    "RAY_health_check_timeout_ms": "300",
    "RAY_health_check_failure_threshold": "3",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    """Ray nodes on this machine's loopback, each `ray start` in a process group of its own."""

    env: dict[str, str]
    cpus: int = 2  # logical CPUs per node
    gpus: int = 1  # logical GPUs per node
    object_store_mb: int = 100
    temp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tlray", dir="/tmp")))  # short: unix sockets
    port: int = field(default_factory=free_port)
    groups: dict[str, int] = field(default_factory=dict)  # node name -> its process group

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.port}"

    def _start(self, name: str, ip: str, args: list[str]) -> None:
        env = self.env | FAST_HEALTH | {"TLRAY_NODE": name, "TLRAY_CLUSTER": str(self.temp), "RAY_USAGE_STATS_ENABLED": "0"}
        cmd = [str(Path(sys.executable).parent / "ray"), "start", *args, f"--node-ip-address={ip}", f"--num-cpus={self.cpus}",
               f"--num-gpus={self.gpus}", f"--object-store-memory={self.object_store_mb * 1_000_000}", "--disable-usage-stats"]  # fmt: skip
        proc = subprocess.run(cmd, env=env, cwd=self.temp, capture_output=True, text=True, timeout=180, start_new_session=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start ({name}) failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
        self.groups[name] = self._group_of(name)  # its daemons stay in the session `ray start` made

    def _group_of(self, name: str) -> int:
        import psutil

        for p in psutil.process_iter(["environ"]):
            env = p.info.get("environ") or {}
            if env.get("TLRAY_CLUSTER") == str(self.temp) and env.get("TLRAY_NODE") == name and "raylet" in p.name():
                return os.getpgid(p.pid)
        raise RuntimeError(f"no raylet of node {name} found")

    def start_head(self) -> None:
        self._start("head", HEAD_IP, ["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp}"])

    def start_worker(self) -> None:
        self._start("worker", WORKER_IP, [f"--address={self.address}"])

    def start_both(self) -> None:
        """Head and worker, the worker's `ray start` as soon as the head's GCS answers (both in about 20 s, not 30)."""
        import threading

        failed: list[BaseException] = []

        def head() -> None:
            try:
                self.start_head()
            except BaseException as exc:  # reported below, in this thread
                failed.append(exc)

        thread = threading.Thread(target=head)
        thread.start()
        deadline = time.monotonic() + 180
        while not failed and time.monotonic() < deadline:
            try:
                socket.create_connection((HEAD_IP, self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        try:
            if not failed:
                self.start_worker()
        finally:
            thread.join()
        if failed:
            raise failed[0]

    def kill(self, name: str) -> None:
        """SIGKILL every process of a node (raylet, workers, the head's GCS): as when a machine dies."""
        group = self.groups.pop(name, None)
        if group is not None:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        for name in list(self.groups):
            self.kill(name)
        shutil.rmtree(self.temp, ignore_errors=True)


def start_s3(log: Path) -> tuple[subprocess.Popen, str]:
    """moto's S3 server on 127.0.0.1 (the tests' server, tests/s3.py), in its own process group."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1)
            return proc, endpoint
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the S3 server did not start (see {log})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("args", nargs="*", help="more `tledit run` flags (e.g. --synthetic-sample 0.2)")
    extra = parser.parse_args(argv).args
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tledit-cluster-"))
    s3, endpoint = start_s3(work / "s3.log")
    aws = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(work / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-aws-credentials"),
        "XDG_STATE_HOME": str(work / "state"),
        "XDG_CACHE_HOME": str(work / "cache"),
    }
    os.environ.update(aws)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TLEDIT_", "RAY_"))}
    env |= {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    models = os.environ.get("TLEDIT_MODEL_CACHE")
    cluster = LocalCluster(env=env | ({"TLEDIT_MODEL_CACHE": models} if models else {}))
    code = 1
    try:
        from tledit_pipeline.storage import filesystem

        filesystem("s3").mkdir("tledit-cluster")
        home = "s3://tledit-cluster/demo"
        cluster.start_both()
        print(
            f"make cluster: Ray head {cluster.address} and a worker node {WORKER_IP} (1 logical GPU each), "
            f"S3 server {endpoint}; up in {time.perf_counter() - t0:.0f}s",
            flush=True,
        )
        from assets.cli import main as tledit
        from tledit_pipeline import cluster as engine

        os.environ.pop("DAGSTER_HOME", None)
        code = tledit(["run", "--engine", "ray", "--ray-address", cluster.address, "--home", home, "--source", "sample", *extra])
        print()
        print("which node did what (ray engine):")
        for pool in engine.pools():
            for p in pool.placements:
                print(f"  {p.asset:<18} {p.key:<32} node {p.node:<10} actor {p.actor}")
            nodes = {p.node for p in pool.placements if p.actor >= 0}
            print(
                f"  {len(pool.placements)} shard steps on {len(nodes)} node(s) by {len(pool.actors)} actor(s) "
                f"({'1 GPU' if pool.gpus else f'{pool.threads} CPU thread(s)'} each); "
                f"the prior was loaded {pool.prior_loads} time(s)"
            )
        print(f"lake: {home}/lake on {endpoint}; total {time.perf_counter() - t0:.0f}s")
    finally:
        try:
            from tledit_pipeline import cluster as engine

            engine.shutdown()
        except ImportError:
            pass
        cluster.stop()
        os.killpg(s3.pid, signal.SIGTERM)
        s3.wait(10)
        shutil.rmtree(work, ignore_errors=True)
        print("make cluster: stopped the Ray nodes and the S3 server it started", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
