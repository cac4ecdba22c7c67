"""The event log on PostgreSQL: Dagster's own PostgresEventLogStorage with tledit's indexes and batches.

The same additions as the local SQLite storage (assets/instance.py, IndexedEventLog): the code-version tag and
raw_corpus's source-file stamp indexed for the stale plan, the partition-key snapshot of a ranged step, the
table-exists cache. Dagster's PostgreSQL storage already writes a batch of materializations in one INSERT and
one index transaction; the planned events of a ranged step (one per shard and asset) it stores one by one, a
connection, an INSERT, a NOTIFY and an index transaction each, so those are batched here the same way.

Imported only through the dagster.yaml that `tledit` writes when TLEDIT_DAGSTER_POSTGRES_URL is set, so
dagster-postgres stays an optional extra (`pip install .[postgres]`).
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config
from sqlalchemy.pool import QueuePool

from assets.dagster_internals import EventLogEntry, SqlEventLogStorageTable, db_result
from assets.instance import IndexedEventLog

__all__ = ["IndexedPostgresEventLogStorage", "PostgresRunStorage", "PostgresScheduleStorage"]


class IndexedPostgresEventLogStorage(IndexedEventLog, PostgresEventLogStorage):
    """PostgresEventLogStorage with the plan's tag indexes, planned events written in one batch, and a small
    connection pool."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        # Dagster's engine opens a new connection for every statement (NullPool), so as not to hold connections
        # per instance; PostgreSQL starts a backend process and authenticates for each, 20-70 ms here, paid by
        # every check evaluation and lookup of a 1000-shard backfill. One kept connection (a few more while
        # busy) per process instead; dispose() closes them.
        self._engine.dispose()
        self._engine = create_pg_engine(
            self.postgres_url,
            token_provider,
            isolation_level="AUTOCOMMIT",
            poolclass=QueuePool,
            pool_size=1,
            max_overflow=8,
            pool_pre_ping=True,
        )

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        # Dagster's own builds PostgresEventLogStorage by name, not cls.
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """A batch of one run's planned events: one INSERT, then one index transaction; the rest as Dagster does."""
        planned = dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        if not events or len({e.run_id for e in events}) != 1 or not all(e.dagster_event_type == planned for e in events):
            return super().store_event_batch(events)
        statement = self.prepare_insert_event_batch(events).returning(SqlEventLogStorageTable.c.id)
        with self._connect() as conn, db_result(conn, statement) as rows:
            ids = [int(row[0]) for row in rows.fetchall()]
        with self.index_transaction() as conn:
            self._store_asset_event_tags(conn, events, ids)
            for event, event_id in zip(events, ids, strict=True):
                self._store_asset_event(conn, event, event_id)
