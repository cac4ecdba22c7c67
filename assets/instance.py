"""The local Dagster instance of a data directory: its dagster.yaml and the event log's SQLite storage.

A single-run backfill over a range of shards records one materialization (and one planned event) per
shard, so lineage stays per partition. Dagster hands those per-partition events to the event log in
batches when DAGSTER_EVENT_BATCH_SIZE is set, but its SQLite storage stores a batch one event at a
time: a new engine, connection and fsync'd commit for the run's database and again for the index,
about 20-40 ms per event on the project's CPU, which made bookkeeping, not work, the cost of a
1000-shard backfill. `BatchedSqliteEventLogStorage` is Dagster's own SQLite storage with the batch
written in one transaction per database, one pooled engine per database kept open (closing the last
connection of a WAL database checkpoints it), and the databases in WAL mode with synchronous=NORMAL (no
fsync per commit; a power cut can lose the last commits, never corrupt the file). Same files, same schema: `dagster dev`, the daemon and plain SqliteEventLogStorage
read it. A cluster uses PostgreSQL instead (docs/deploy.md).

Dagster indexes an asset event's data-version tag so that the latest one per partition is one query. This
storage also indexes what `tledit run`'s plan reads of every shard (assets/staleness.py): the code-version
tag and raw_corpus's source-file stamp (from its metadata, as `tledit/<name>` rows of the same tag index).
Without them the plan deserializes every shard's latest record of every asset; with another storage it
still does.
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from filelock import FileLock
from sqlalchemy import create_engine
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection
from sqlalchemy.pool import QueuePool

from assets.dagster_internals import (
    ASSET_CHECK_EVENTS,
    ASSET_EVENTS,
    FINISHED_STATUSES,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    EventLogEntry,
    SqliteEventLogStorage,
    SqliteRunStorage,
    db_result,
)
from tledit_pipeline.settings import Settings

MARKER = "# written by tledit"
CODE_VERSION_TAG = "dagster/code_version"
# raw_corpus metadata the plan compares with the source file (assets/raw.py), indexed as tledit/<name> tags.
INDEXED_SOURCE = ("source_sha256", "source_size", "source_mtime_ns")


def metadata_tag(name: str) -> str:
    """The tag-index key of an indexed metadata entry."""
    return f"tledit/{name}"


_INDEXED_TAGS = frozenset({CODE_VERSION_TAG, *(metadata_tag(n) for n in INDEXED_SOURCE)})
# Per-partition events of a ranged step reach the storage in batches of at most this many.
EVENT_BATCH_SIZE = "1000"


def instance_yaml(dagster_home: Path, postgres_url: str | None = None) -> str:
    """dagster.yaml: no telemetry, one `prior` step at a time, the batched event log under history/runs, or
    every storage on PostgreSQL (the URL has no password: libpq reads PGPASSWORD or ~/.pgpass itself)."""
    if postgres_url:
        # psycopg2 named: SQLAlchemy 2.1 reads a plain postgresql:// as psycopg 3, which dagster-postgres does not use.
        url = postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1)
        config = f"""  config:
    postgres_url: "{url}"
"""
        storages = (
            f"run_storage:\n  module: assets.instance_postgres\n  class: PostgresRunStorage\n{config}"
            f"schedule_storage:\n  module: assets.instance_postgres\n  class: PostgresScheduleStorage\n{config}"
            f"event_log_storage:\n  module: assets.instance_postgres\n  class: IndexedPostgresEventLogStorage\n{config}"
        )
    else:
        storages = f"""event_log_storage:
  module: assets.instance
  class: BatchedSqliteEventLogStorage
  config:
    base_dir: {dagster_home / "history" / "runs"}
"""
    return f"""{MARKER}
telemetry:
  enabled: false
# Pools: at most one step of the `prior` pool (token_scores, synthetic_corpus) runs at a time, so runs
# never fight over a device.
# A `tledit run --submit` backfill is queued and launched by the daemon (make ui, dagster-daemon run),
# at most max_concurrent_runs runs at a time.
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 2
{storages}"""


def write_instance_yaml(dagster_home: Path, postgres_url: str | None = None) -> Path:
    """Write dagster.yaml unless a person wrote their own (one without tledit's marker line)."""
    path = Path(dagster_home) / "dagster.yaml"
    want = instance_yaml(Path(dagster_home), postgres_url)
    if not path.exists() or (path.read_text().startswith(MARKER) and path.read_text() != want):
        tmp = path.with_name(f".dagster.yaml.{os.getpid()}.tmp")
        tmp.write_text(want)
        os.replace(tmp, path)
    return path


def enable_event_batches() -> None:
    """Ask Dagster to hand per-partition events to the storage in batches (this process and its children)."""
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)


def _wal(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class IndexedEventLog:
    """What tledit adds to an SQL event log storage (mixed into the SQLite one here and the PostgreSQL one in
    assets/instance_postgres.py): the indexed tags the plan reads, the partition-key snapshot of a ranged step
    and the table-exists cache. The private hooks it overrides are listed in assets/dagster_internals.py."""

    def __init__(self, *args, **kwargs):
        self._tables: set[str] = set()
        self._partitions: dict[str, tuple[list[str], set[str]]] | None = None  # see partitions_snapshot
        super().__init__(*args, **kwargs)

    @contextmanager
    def partitions_snapshot(self) -> Iterator[None]:
        """Within: dynamic partitions are read once and lookups answered from that read.

        A ranged step adds each shard's metadata with context.add_asset_metadata, and Dagster checks the
        shard is in the run's range by reading every partition key (three queries, O(shards) each): per
        shard, so quadratic in the number of shards. The shards of a running range do not change.
        """
        outer, self._partitions = self._partitions, {} if self._partitions is None else self._partitions
        try:
            yield
        finally:
            self._partitions = outer

    def _snapshot(self, name: str) -> tuple[list[str], set[str]] | None:
        if self._partitions is None:
            return None
        if name not in self._partitions:
            keys = list(super().get_dynamic_partitions(name))
            self._partitions[name] = (keys, set(keys))
        return self._partitions[name]

    def get_dynamic_partitions(self, partitions_def_name: str) -> Sequence[str]:
        snap = self._snapshot(partitions_def_name)
        return list(snap[0]) if snap is not None else super().get_dynamic_partitions(partitions_def_name)

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        snap = self._snapshot(partitions_def_name)
        return partition_key in snap[1] if snap is not None else super().has_dynamic_partition(partitions_def_name, partition_key)

    def has_table(self, table_name: str) -> bool:
        """Dagster asks before every dynamic-partition lookup and check evaluation, each time through a new
        connection (about 2 ms on SQLite, a connection and its authentication on PostgreSQL); a table, once
        there, stays, so a yes is remembered."""
        if table_name in self._tables:
            return True
        found = super().has_table(table_name)
        if found:
            self._tables.add(table_name)
        return found

    def get_asset_tags_to_index(self, tag_keys: set[str]) -> set[str]:
        return super().get_asset_tags_to_index(tag_keys) | (set(tag_keys) & _INDEXED_TAGS)

    def _tags_for_asset_event(self, event: EventLogEntry) -> Mapping[str, str]:
        tags = dict(super()._tags_for_asset_event(event))
        dagster_event = event.dagster_event
        if dagster_event is not None and dagster_event.is_step_materialization:
            metadata = dagster_event.step_materialization_data.materialization.metadata
            for name in INDEXED_SOURCE:
                value = metadata.get(name)
                if value is not None and getattr(value, "value", None) is not None:
                    tags[metadata_tag(name)] = str(value.value)
        return tags


class BatchedSqliteEventLogStorage(IndexedEventLog, SqliteEventLogStorage):
    """SqliteEventLogStorage that writes a batch of events in one transaction per database."""

    KEEP_ENGINES = 4  # the index and the few runs this process is writing

    def __init__(self, base_dir: str, inst_data=None):
        self._engines: OrderedDict[str, object] = OrderedDict()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engines.pop(shard, None)
            if engine is None:
                # Pooled, not one connection per statement: closing a WAL database's last connection
                # checkpoints it (an fsync), which was most of the cost of an event.
                engine = create_engine(
                    self.conn_string_for_shard(shard),
                    poolclass=QueuePool,
                    pool_size=1,
                    max_overflow=4,
                    connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
                )
                sa_event.listen(engine, "connect", _wal)
                if shard not in self._initialized_dbs:
                    self._initdb(engine)
                    self._initialized_dbs.add(shard)
            self._engines[shard] = engine
            while len(self._engines) > self.KEEP_ENGINES:
                self._engines.popitem(last=False)[1].dispose()
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()
        super().dispose()

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """The run's inserts in one transaction, the index's (rows, tags, asset entries) in another."""
        if len({e.run_id for e in events}) != 1 or not all(e.is_dagster_event for e in events):
            return super().store_event_batch(events)
        statements = [self.prepare_insert_event(e) for e in events]
        with self.run_connection(events[0].run_id) as conn:
            for statement in statements:
                with db_result(conn, statement):
                    pass
        asset = [(e, s) for e, s in zip(events, statements, strict=True) if e.dagster_event_type in ASSET_EVENTS]
        checks = [(e, s) for e, s in zip(events, statements, strict=True) if e.dagster_event_type in ASSET_CHECK_EVENTS]
        if asset:
            with self.index_transaction() as conn:
                ids = []
                for _, statement in asset:
                    with db_result(conn, statement) as result:
                        ids.append(result.inserted_primary_key[0])
                self._store_asset_event_tags(conn, [e for e, _ in asset], ids)
                for (e, _), event_id in zip(asset, ids, strict=True):
                    self._store_asset_event(conn, e, event_id)
        for e, statement in checks:  # a planned check covers the whole range: one event per check
            with self.index_connection() as conn, db_result(conn, statement) as result:
                event_id = result.inserted_primary_key[0]
            self.store_asset_check_event(e, event_id)


def prepare_instance(settings: Settings) -> dg.DagsterInstance:
    """The Dagster instance under <home>/dagster_home (or TLEDIT_DAGSTER_HOME), the same one `make ui` opens;
    its storages on PostgreSQL when dagster_postgres_url is set."""
    home = settings.instance_dir
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    enable_event_batches()
    # Two `tledit run`s starting at once on a new home would both create the instance's SQLite schema
    # ("table ... already exists"): the first open is serialized by a lock file; later opens just wait briefly.
    # (On PostgreSQL Dagster creates the schema itself; two machines creating it at once is retried by Dagster.)
    with FileLock(home / ".instance.lock"):
        write_instance_yaml(home, settings.dagster_postgres_url)
        return dg.DagsterInstance.get()


HOST_TAG = "tledit/host"
BOOT_TAG = "tledit/boot_id"


def boot_id() -> str:
    """This machine's current boot: the kernel's boot id, else the boot time (a reboot ends every process)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        import psutil

        return f"boot-{int(psutil.boot_time())}"


def owner_tags() -> dict[str, str]:
    """Run tags naming the machine and boot a `tledit run` executes on: dead-run recovery touches only its own."""
    return {HOST_TAG: socket.gethostname(), BOOT_TAG: boot_id()}


def is_shared(instance) -> bool:
    """Whether other machines may use the instance: any run storage but a local SQLite one."""
    return not isinstance(instance.run_storage, SqliteRunStorage)


def _ours(run, shared: bool) -> bool | None:
    """True: this machine and boot started the run; False: this machine before a reboot (so it is dead);
    None: another machine's, or unknown on a shared instance (a run launched from the UI or the daemon)."""
    host = run.tags.get(HOST_TAG)
    if host is None:
        return None if shared else True  # a local SQLite instance is one machine's: every run is ours
    if host != socket.gethostname():
        return None
    return run.tags.get(BOOT_TAG) == boot_id()


def _worker_pid(instance, run_id: str) -> int | None:
    """The pid the run's steps execute in: Dagster's own "Executing steps in process (pid: N)" engine event."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        pid = entry.dagster_event.engine_event_data.metadata.get("pid") if entry.dagster_event else None
        if pid is not None:
            return int(pid.value)
    return None


def _alive(pid: int, since: float | None) -> bool:
    """Whether process `pid` exists and is not a later process that reused the id (started after `since`)."""
    import psutil

    try:
        started = psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.Error:  # not ours to inspect: assume it runs
        return True
    return since is None or started <= since + 1


def recover_dead_runs(instance) -> list[str]:
    """Fail the runs a killed process left STARTED and free the pool slots that finished runs still hold.

    A run killed (SIGKILL, or SIGINT mid-step) keeps its `prior` pool slot: Dagster frees a step's slot when
    the step ends, and for launched runs its run-monitoring daemon fails runs whose worker died and frees
    slots of finished runs (free_slots_after_run_end_seconds). `tledit run` executes in process, with no
    daemon, so it does the same at start-up, or the next run waits for the slot forever. A run counts as
    dead only when it was started on this machine (its host tag, owner_tags) and the process its steps ran in
    (Dagster's pid engine event) no longer exists, or this machine rebooted since (its boot-id tag). A run of
    another machine is never touched, nor, on a shared (PostgreSQL) instance, a run without tledit's host tag
    (launched from the UI or by a daemon, whose run monitoring watches it); on a local SQLite instance every
    run is this machine's. Pool slots likewise: freed only for this machine's finished runs (every finished
    run's on SQLite). Returns one line per recovered run.
    """
    lines: list[str] = []
    shared = is_shared(instance)
    live = instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.CANCELING])
    )
    for record in live:
        run = record.dagster_run
        ours = _ours(run, shared)
        if ours is None:
            continue
        pid = _worker_pid(instance, run.run_id)
        if ours and (pid is None or _alive(pid, record.start_time)):
            continue
        gone = f"the process running it (pid {pid}) is gone" if ours else "this machine rebooted since it started"
        instance.report_run_failed(run, f"{gone}: killed or crashed")
        lines.append(f"run {run.run_id[:8]}: {gone}; marked failed")
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return lines
    holders = set(storage.get_concurrency_run_ids())
    for info in storage.get_concurrency_infos(list(storage.get_concurrency_keys())).values():
        holders |= {s.run_id for s in info.claimed_slots} | {s.run_id for s in info.pending_steps}
    if holders:
        finished = {r.run_id: r for r in instance.get_runs(filters=dg.RunsFilter(run_ids=list(holders)))}
        for run_id in sorted(holders):
            run = finished.get(run_id)
            if (run is None and not shared) or (
                run is not None and run.status in FINISHED_STATUSES and _ours(run, shared) is not None
            ):
                storage.free_concurrency_slots_for_run(run_id)
                lines.append(f"run {run_id[:8]}: freed its pool slots ({run.status.value if run else 'run deleted'})")
    return lines


def copy_history(source: dg.DagsterInstance, target: dg.DagsterInstance) -> tuple[int, int]:
    """Copy every run, its events and the shards' partition keys from `source` to `target` (the move of a local
    SQLite home to PostgreSQL, `tledit move-instance`); returns (runs, events) copied.

    What `dagster debug export` / `dagster debug import` do for one run, for all of them, with public instance
    methods: snapshots, the run, its events (so the target indexes them as it writes: the stale plan's tags,
    the latest materialization per partition). Events go in the order they happened across runs (their
    timestamps), so the target's storage ids keep the order the plan compares. A run already in the target is
    skipped; schedules' and sensors' ticks and backfill records are not copied.
    """
    from datetime import UTC, datetime

    from assets.partitions import SHARDS

    target.add_dynamic_partitions(SHARDS, list(source.get_dynamic_partitions(SHARDS)))
    runs = [r for r in reversed(source.get_runs()) if not target.has_run(r.run_id)]  # oldest first
    events: list[tuple[float, int, int, EventLogEntry]] = []
    for order, run in enumerate(runs):
        for snapshot_id, get in (
            (run.execution_plan_snapshot_id, source.get_execution_plan_snapshot),
            (run.job_snapshot_id, source.get_job_snapshot),
        ):
            if snapshot_id and not target.has_snapshot(snapshot_id):
                target.add_snapshot(get(snapshot_id))
        target.add_run(run)
        cursor = None
        while True:
            page = source.event_log_storage.get_records_for_run(run.run_id, cursor=cursor, limit=5000)
            events += [(r.event_log_entry.timestamp, order, r.storage_id, r.event_log_entry) for r in page.records]
            if not page.has_more:
                break
            cursor = page.cursor
    events.sort(key=lambda e: e[:3])
    batchable = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED}
    batch: list[EventLogEntry] = []

    def flush() -> None:
        if batch:
            target.event_log_storage.store_event_batch(list(batch))
            batch.clear()

    for *_, entry in events:
        kind = entry.dagster_event_type
        if kind in batchable and (not batch or (batch[0].run_id, batch[0].dagster_event_type) == (entry.run_id, kind)):
            batch.append(entry)
            continue
        flush()
        if kind in batchable:
            batch.append(entry)
            continue
        target.event_log_storage.store_event(entry)
        if entry.dagster_event is not None and entry.dagster_event.is_job_event:  # start and end times, status
            when = datetime.fromtimestamp(entry.timestamp, UTC)
            target.run_storage.handle_run_event(entry.run_id, entry.dagster_event, update_timestamp=when)
    flush()
    return len(runs), len(events)
