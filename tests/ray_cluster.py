"""A real two-node Ray cluster on loopback for the tests: started once per test session, stopped after it.

A head and a worker node (`ray start`, benchmarks/cluster.py's LocalCluster: loopback addresses, one logical
GPU each so GPU scheduling is exercised on a machine without one, small object stores, no dashboard), each
in a process group of its own that the teardown kills: nothing is left running, nothing else is touched.
The nodes see the S3 server of tests/s3.py through the standard AWS variables, and the test hook of
tests/ray_hold (pausing a lake writer so a test can kill it mid-shard).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.cluster import LocalCluster
from tests.s3 import aws_env

REPO = Path(__file__).resolve().parents[1]
HOLD_HOOK = Path(__file__).resolve().parent / "ray_hold"


@dataclass
class RayCluster(LocalCluster):
    holds: Path = Path()

    def hold(self, name: str) -> None:
        """The next lake write of node `name` (or of any node: `any`) pauses before it becomes visible."""
        (self.holds / name).write_text("")

    def held_pid(self, name: str, timeout: float = 180.0) -> int:
        """The pid of the process paused by hold(name), once it is paused."""
        return self.first_held(name, timeout=timeout)[1]

    def first_held(self, *names: str, timeout: float = 180.0) -> tuple[str, int]:
        """(hold, pid) of the first writer paused on one of the holds `names`."""
        deadline = time.monotonic() + timeout
        while True:
            for name in names:
                pid_file = self.holds / f"{name}.pid"
                if pid_file.exists():
                    pid = int(pid_file.read_text().split()[0])
                    pid_file.unlink()
                    return name, pid
            if time.monotonic() > deadline:
                raise AssertionError(f"no writer paused on hold {' or '.join(map(repr, names))} within {timeout:.0f}s")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def ray_cluster(s3_server, tmp_path_factory):
    """One head and one worker node for the whole session, with two logical CPUs and one logical GPU each."""
    pytest.importorskip("ray")
    state = tmp_path_factory.mktemp("ray-nodes")
    holds = state / "holds"
    holds.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TLEDIT_", "AWS_", "RAY_"))}
    env.update(aws_env(s3_server.endpoint, state))
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).resolve().parent / "ray_hold")]),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        TLRAY_TEST_HOLDS=str(holds),
    )
    cluster = RayCluster(env=env, holds=holds)
    try:
        cluster.start_both()
        yield cluster
    finally:
        cluster.stop()
