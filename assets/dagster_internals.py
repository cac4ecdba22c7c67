"""Every import of Dagster's private modules (`dagster._...`), in one place.

They have no stability promise, so pyproject.toml caps dagster below the next minor release and the lock
pins the version tested; a Dagster upgrade is checked here and by tests/assets/test_staleness.py,
tests/assets/test_scale.py (ranged runs, the event log storage) and tests/assets/test_submit.py (backfills).
"""

from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.dagster_run import FINISHED_STATUSES
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.base import EventLogRecord
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SQLITE_BUSY_TIMEOUT_SECONDS
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
    "EventLogEntry",
    "EventLogRecord",
    "FINISHED_STATUSES",
    "PartitionBackfill",
    "SqliteEventLogStorage",
    "db_result",
    "is_valid_cron_string",
    "make_new_backfill_id",
]
