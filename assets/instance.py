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
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
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
    SQLITE_BUSY_TIMEOUT_SECONDS,
    EventLogEntry,
    SqliteEventLogStorage,
    db_result,
)
from tledit_pipeline.settings import Settings

MARKER = "# written by tledit"
# Per-partition events of a ranged step reach the storage in batches of at most this many.
EVENT_BATCH_SIZE = "1000"


def instance_yaml(dagster_home: Path) -> str:
    """dagster.yaml: no telemetry, one `prior` step at a time, the batched event log under history/runs."""
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
event_log_storage:
  module: assets.instance
  class: BatchedSqliteEventLogStorage
  config:
    base_dir: {dagster_home / "history" / "runs"}
"""


def write_instance_yaml(dagster_home: Path) -> Path:
    """Write dagster.yaml unless a person wrote their own (one without tledit's marker line)."""
    path = Path(dagster_home) / "dagster.yaml"
    want = instance_yaml(Path(dagster_home))
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


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
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
    """The Dagster instance under <home>/dagster_home (or TLEDIT_DAGSTER_HOME), the same one `make ui` opens."""
    home = settings.instance_dir
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    enable_event_batches()
    # Two `tledit run`s starting at once on a new home would both create the instance's SQLite schema
    # ("table ... already exists"): the first open is serialized by a lock file; later opens just wait briefly.
    with FileLock(home / ".instance.lock"):
        write_instance_yaml(home)
        return dg.DagsterInstance.get()
