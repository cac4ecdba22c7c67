"""Every import of Dagster's private modules (`dagster._...`), in one place, and the private hooks overridden.

They have no stability promise, so pyproject.toml caps dagster below the next minor release and the lock
pins the version tested; a Dagster upgrade is checked here and by tests/assets/test_staleness.py,
tests/assets/test_scale.py (ranged runs, the event log storage), tests/assets/test_postgres.py (the same on
PostgreSQL) and tests/assets/test_submit.py (backfills).

Private methods of Dagster's SQL event log storages that assets/instance.py (IndexedEventLog, both storages;
BatchedSqliteEventLogStorage) and assets/instance_postgres.py override or call, checked against
dagster 1.13.27 and dagster-postgres 0.29.27: `_tags_for_asset_event`, `_store_asset_event_tags`,
`_store_asset_event`, `_connect`, `_initdb`, `_initialized_dbs`, `_db_lock` (SQLite only),
`prepare_insert_event`, `prepare_insert_event_batch`.
"""

from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, EngineEventData
from dagster._core.events.log import EventLogEntry
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.dagster_run import FINISHED_STATUSES
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.base import EventLogRecord
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._core.utils import make_new_backfill_id
from dagster._utils.schedules import is_valid_cron_string

__all__ = [
    "ASSET_CHECK_EVENTS",
    "ASSET_EVENTS",
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "AssetCheckEvaluationTargetMaterializationData",
    "AssetGraphSubset",
    "AssetKeyPartitionKey",
    "BulkActionStatus",
    "EngineEventData",  # tests: a run's pid event, as Dagster records it
    "EventLogEntry",
    "EventLogRecord",
    "FINISHED_STATUSES",
    "PartitionBackfill",
    "SqlEventLogStorageTable",
    "SqliteEventLogStorage",
    "SqliteRunStorage",
    "db_result",
    "is_valid_cron_string",
    "make_new_backfill_id",
]
