"""The `ray` engine: the prior's steps on a pool of long-lived scoring actors of a Ray cluster.

A ranged step (token_scores, synthetic_corpus, token_scores_g*) hands its shards to a pool of actors, each
loading the prior once for the whole run (one per GPU with num_gpus=1 where the cluster has GPUs; CPU actors
with a thread count otherwise), and streams them to whichever actor is free. An actor runs the same function
as the local engine (tledit_pipeline.steps), so it writes the shard's partition atomically to the lake, and
returns the shard's metadata; the Dagster layer records one materialization per shard, as in process.

Failures lose nothing. An actor whose process or node dies mid-shard is replaced and the shard goes to
another actor (up to ATTEMPTS tries; Ray's own restarts cannot move an actor off a dead node while no other
node has a free GPU for it). The killed write left no visible partition (lake.PartitionWriter). A shard that
fails every try, or raises in the step itself (a bad input, not a lost process), comes back as that shard's
failure, named in `tledit run`'s failure list. After each shard an actor writes a receipt (the code version,
the input and output digests, the metadata, the Dagster run); a rerun after a killed driver, whose run never
recorded those shards, takes the finished ones from their receipts instead of scoring them again.

The lake must be reachable from every node: a local data directory on a cluster of more than one node is
refused unless the user vouches for a shared file system (shared_home). Imports no Dagster.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tledit_pipeline import storage
from tledit_pipeline.errors import TleditError
from tledit_pipeline.lake import partition_digest, partition_file, write_file_atomically
from tledit_pipeline.settings import Settings
from tledit_pipeline.steps import ShardJob, decode_meta, encode_meta, run_job

log = logging.getLogger("tledit")

ATTEMPTS = 3  # tries per shard when its actor's process or node dies (a step's own error is not retried)
RECEIPTS = "receipts"  # <home>/receipts/<asset>/shard=<key>.json
NAMESPACE = "tledit"
PLACE_TIMEOUT = 120.0  # seconds to wait for an actor to be placed when none is running (resources gone)
_JOINED: list[str | None] = [None]  # the address this process joined ("" for a local Ray)


class ClusterError(TleditError):
    """The Ray cluster cannot be used as configured; the message says which setting and why."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError("engine ray needs Ray: pip install 'tledit-pipeline[ray]' (make install does)") from None
    return ray


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:400]


def _reachable(address: str, timeout: float = 5.0) -> None:
    """A `host:port` or `ray://host:port` address must answer before Ray is asked (its own wait is a minute)."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(f"ray_address {address!r}: expected auto, host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"ray_address {address!r}: nothing answers there ({_one_line(exc)}); is the cluster up?") from None


def connect(settings: Settings) -> list[dict]:
    """Join the cluster of ray_address (or start a local Ray for this process) once; its alive nodes.

    Refuses, in one line, an address that does not answer and a local data directory on a multi-node cluster
    without shared_home.
    """
    ray = _ray()
    address = settings.ray_address
    if ray.is_initialized() and _JOINED[0] != (address or ""):
        shutdown()  # another cluster than the one this process joined
    if not ray.is_initialized():
        if address and address != "auto":
            _reachable(address)
        # Workers import this package from where the driver does (a checkout or site-packages); on a real
        # cluster every node has the same image or install (docs/deploy.md).
        root = str(Path(__file__).resolve().parent.parent)
        kwargs: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False, "configure_logging": False}
        if not (address or "").startswith("ray://"):
            kwargs["job_config"] = ray.job_config.JobConfig(code_search_path=[root])
        if not address:
            kwargs["include_dashboard"] = False
        host = (address or "").removeprefix("ray://").rpartition(":")[0]
        if host.startswith("127.") and not (address or "").startswith("ray://"):
            # A cluster on this machine's loopback (make cluster, the tests): Ray would take this driver's node
            # address from its interface and find no node there.
            kwargs["_node_ip_address"] = host
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError: all one line for the user
            raise ClusterError(
                f"ray_address {address or '(a local Ray)'}: cannot join the Ray cluster: {_one_line(exc)}"
            ) from None
        _JOINED[0] = address or ""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    check_shared_home(settings, nodes)
    return nodes


def check_shared_home(settings: Settings, nodes: list[dict]) -> None:
    """Every worker writes the lake: a local data directory is usable on one node, or where every node sees it."""
    if len(nodes) > 1 and not isinstance(settings.home, storage.RemotePath) and not settings.shared_home:
        raise ClusterError(
            f"the data directory {settings.home} is a local path but the Ray cluster has {len(nodes)} nodes: use an "
            "object store (TLEDIT_HOME=s3://...) or, if every node sees this path, say so with --shared-home (TLEDIT_SHARED_HOME=1)"
        )


# --- receipts: which shards a killed driver's run finished ---------------------------------------------------


def receipt_path(home: Any, asset: str, key: str) -> Any:
    partition_file(home, asset, key)  # validates the asset name and key
    return storage.location(home) / RECEIPTS / asset / f"shard={key}.json"


def _read_receipt(home: Any, asset: str, key: str) -> dict | None:
    path = receipt_path(home, asset, key)
    try:
        with storage.open_read(path) as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError, TleditError):
        return None
    return data if isinstance(data, dict) else None


def reusable(s: Settings, job: ShardJob, code_version: str, run_id: str, recorded_run: str | None) -> dict | None:
    """The metadata of a shard another run finished but never recorded (its driver was killed), if the
    partition is still exactly what it wrote, from the same input and code version; else None."""
    r = _read_receipt(s.home, job.asset, job.key)
    if not r or r.get("code_version") != code_version or r.get("run_id") in (run_id, recorded_run):
        return None
    try:
        same = r.get("input") == partition_digest(s.home, job.source, job.key) and r.get("output") == partition_digest(
            s.home, job.asset, job.key
        )
    except (OSError, TleditError):
        return None
    return decode_meta(r["meta"]) if same else None


# --- the actors ---------------------------------------------------------------------------------------------


class ScoringActor:
    """One long-lived scorer: loads the prior on its first shard and keeps it for every later one."""

    def __init__(self, prior_args: dict[str, Any], threads: int, version: str):
        import torch

        self.prior_args, self.version, self.threads = prior_args, version, threads
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # scorer.use_all_cores keeps this count
        self.loads = 0
        self._prior: Any = None

    def _load(self, dtype: str) -> Any:
        if self._prior is None or self._prior.dtype != dtype:
            from tledit_pipeline.prior import load_prior, model_version

            args = self.prior_args | {"dtype": dtype}
            here = model_version(args["model"], Path(args["models_dir"]))
            if here != self.version:  # another model folder or weights on this node: its scores would lie
                raise ClusterError(
                    f"node {socket.gethostname()} sees prior {args['model']} at version {here}, the driver {self.version}: "
                    "every node needs the same model files"
                )
            self._prior = load_prior(**(args | {"models_dir": Path(args["models_dir"])}))
            self.loads += 1
        return self._prior

    def where(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {"node": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(), "pid": os.getpid()}

    def measure(self) -> dict[str, Any]:
        """Where this actor runs and the dtype its node would pick (dtype `auto`: the node's measured answer)."""
        from tledit_pipeline.prior import pick_device, pick_dtype

        return self.where() | {"dtype": pick_dtype(pick_device(self.prior_args["device"]), self.prior_args["dtype"])}

    def run(self, flat: dict[str, Any], job: ShardJob, code_version: str, run_id: str, dtype: str) -> dict[str, Any]:
        s = Settings.from_env(env={}, **flat)
        before = self.loads
        input_digest = partition_digest(s.home, job.source, job.key)
        meta = run_job(lambda: self._load(dtype), s, job)
        receipt = {
            "asset": job.asset,
            "shard": job.key,
            "code_version": code_version,
            "run_id": run_id,
            "input": input_digest,
            "output": partition_digest(s.home, job.asset, job.key),
            "meta": encode_meta(meta),
        }
        text = json.dumps(receipt, sort_keys=True)
        write_file_atomically(receipt_path(s.home, job.asset, job.key), lambda tmp: tmp.write_text(text))
        return {"meta": meta, "loaded": self.loads - before, **self.where()}


@dataclass
class Placement:
    """Which node and actor did a shard (or `receipt` when a killed run had finished it)."""

    asset: str
    key: str
    node: str
    actor: int
    loaded: int


@dataclass
class Pool:
    """Scoring actors for one prior; kept for the process's life, so every step of a run shares them."""

    threads: int
    gpus: bool
    spawn: Any  # () -> a new actor handle
    size: int
    actors: list[Any] = field(default_factory=list)
    starting: dict[Any, int] = field(default_factory=dict)  # readiness call -> actor index (placed, not yet answered)
    ready: list[int] = field(default_factory=list)  # actors that answered and are free
    placements: list[Placement] = field(default_factory=list)
    replaced: int = 0
    # The one dtype every actor scores in, whichever node it is on: the first placed actor's node decides `auto`
    # (nodes measure apart and may disagree; one shard's bytes must not depend on where it ran).
    dtype: str | None = None

    def __post_init__(self) -> None:
        for i in range(self.size):
            self.actors.append(None)
            self._start(i)

    def _start(self, i: int) -> None:
        self.actors[i] = self.spawn()
        self.starting[self.actors[i].measure.remote()] = i

    @property
    def prior_loads(self) -> int:
        return sum(p.loaded for p in self.placements)

    def kill(self) -> None:
        ray = _ray()
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors, self.starting, self.ready = [], {}, []

    def run(
        self,
        s: Settings,
        jobs: Iterable[ShardJob],
        code_version: str,
        run_id: str,
        recorded: dict[str, str | None] | None = None,
    ) -> Iterator[tuple[str, dict[str, Any] | Exception]]:
        """Stream the jobs to the free actors; yields (shard, metadata or its failure) as each shard ends."""
        ray = _ray()
        from ray.exceptions import RayError, RayTaskError

        flat = s.flat()
        recorded = recorded or {}
        queue: deque[tuple[ShardJob, int]] = deque()
        for job in jobs:
            meta = reusable(s, job, code_version, run_id, recorded.get(job.key))
            if meta is not None:
                self.placements.append(Placement(job.asset, job.key, "receipt", -1, 0))
                log.info("[%s] %s: finished by an unrecorded earlier run (receipt), not scored again", job.key, job.asset)
                yield job.key, meta
            else:
                queue.append((job, 1))
        busy: dict[Any, tuple[int, ShardJob, int]] = {}

        def dispatch() -> None:
            while queue and self.ready:
                i = self.ready.pop(0)
                job, attempt = queue.popleft()
                busy[self.actors[i].run.remote(flat, job, code_version, run_id, self.dtype)] = (i, job, attempt)

        def replace(i: int) -> None:
            ray.kill(self.actors[i], no_restart=True)  # a dead one already; an unreachable one is ended
            self.replaced += 1
            self._start(i)

        dispatch()
        while queue or busy:
            # With no shard in flight, only actors being placed can take the queue: wait for one, not forever.
            ready, _ = ray.wait(list(busy) + list(self.starting), num_returns=1, timeout=None if busy else PLACE_TIMEOUT)
            if not ready:
                for job, _ in queue:
                    yield (
                        job.key,
                        ClusterError(f"no scoring actor could be placed on the Ray cluster within {PLACE_TIMEOUT:.0f}s"),
                    )
                return
            ref = ready[0]
            if ref in self.starting:
                i = self.starting.pop(ref)
                try:
                    placed = ray.get(ref)
                    self.ready.append(i)
                    if self.dtype is None:
                        self.dtype = placed["dtype"]
                        log.info("ray: every actor scores in %s (node %s's pick)", self.dtype, placed["ip"])
                except RayError:  # died while being placed (its node went away): place another
                    replace(i)
                dispatch()
                continue
            i, job, attempt = busy.pop(ref)
            try:
                out = ray.get(ref)
            except RayTaskError as exc:  # the step itself failed (bad input, ...): that shard's error, as in process
                self.ready.append(i)
                cause = getattr(exc, "cause", None)
                yield job.key, cause if isinstance(cause, Exception) else ClusterError(_one_line(exc))
            except RayError as exc:  # the actor's process or node died (or is unreachable): replace it, try elsewhere
                replace(i)
                why = f"its scoring actor died {attempt} time(s): {_one_line(exc)}"
                if attempt < ATTEMPTS:
                    log.warning("[%s] %s; trying again on another actor", job.key, why)
                    queue.appendleft((job, attempt + 1))
                else:
                    yield job.key, ClusterError(why)
            else:
                self.ready.append(i)
                self.placements.append(Placement(job.asset, job.key, out["ip"], i, out["loaded"]))
                log.info("[%s] %s on node %s (actor %d, pid %d)", job.key, job.asset, out["ip"], i, out["pid"])
                yield job.key, out["meta"]
            dispatch()
        nodes = {p.node for p in self.placements if p.actor >= 0}
        log.info(
            "ray: %d shard(s) done on %d node(s) (%s); prior loaded %d time(s) by %d actor(s) in this process, %d replaced",
            len(self.placements),
            len(nodes),
            ", ".join(sorted(nodes)),
            self.prior_loads,
            len({p.actor for p in self.placements if p.loaded}),
            self.replaced,
        )


_POOLS: dict[tuple, Pool] = {}


def pool(settings: Settings, version: str) -> Pool:
    """The process's pool of scoring actors for this prior (created on first use, one prior load per actor).

    One pool at a time: a pool for another prior or size first stops the previous one's actors (they hold the
    cluster's GPUs).
    """
    nodes = connect(settings)
    s, sc = settings, settings.scoring
    prior_args = {
        "model": s.model,
        "models_dir": str(s.models_dir),
        "device": sc.device,
        "dtype": sc.dtype,
        "trust_remote_code": s.trust_remote_code,
        "allow_pickle": s.allow_pickle,
    }
    key = (tuple(sorted(prior_args.items())), version, s.ray_actors, s.ray_threads, _JOINED[0])
    if key in _POOLS:
        return _POOLS[key]
    for old in _POOLS.values():
        old.kill()
    _POOLS.clear()
    ray = _ray()
    gpus = int(ray.cluster_resources().get("GPU", 0)) if sc.device != "cpu" else 0
    cpus = [int(n.get("Resources", {}).get("CPU", 1)) for n in nodes] or [1]
    if gpus:
        n, threads = s.ray_actors or gpus, s.ray_threads or 1
        options: dict[str, Any] = {"num_gpus": 1, "num_cpus": threads}
    else:
        n = s.ray_actors or len(nodes)
        per_node = max(1, -(-n // len(nodes)))
        threads = s.ray_threads or max(1, min(cpus) // per_node)
        options = {"num_cpus": threads}
    remote = ray.remote(ScoringActor).options(scheduling_strategy="SPREAD", max_restarts=0, max_task_retries=0, **options)

    def spawn() -> Any:
        return remote.remote(prior_args, threads, version)

    p = Pool(threads=threads, gpus=bool(gpus), spawn=spawn, size=n)
    log.info(
        "ray: %d scoring actor(s) (%s, %d thread(s) each) on %d node(s)", n, "1 GPU each" if gpus else "CPU", threads, len(nodes)
    )
    _POOLS[key] = p
    return p


def pools() -> list[Pool]:
    """The pools of this process (make cluster and the tests report their placements and prior loads)."""
    return list(_POOLS.values())


def shutdown() -> None:
    """Stop this process's actors and leave the cluster (a local Ray started for the run stops with it)."""
    _POOLS.clear()
    _JOINED[0] = None
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()


def wait_for_nodes(count: int, timeout: float = 60.0) -> list[dict]:
    """Block until the joined cluster has `count` alive nodes (make cluster, tests); the alive nodes."""
    ray = _ray()
    deadline = time.monotonic() + timeout
    while True:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if len(nodes) >= count or time.monotonic() > deadline:
            return nodes
        time.sleep(0.2)
