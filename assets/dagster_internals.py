"""Every import of Dagster's private modules (`dagster._...`), in one place.

They have no stability promise, so pyproject.toml caps dagster below the next minor release and the lock
pins the version tested; a Dagster upgrade is checked here and by tests/assets/test_staleness.py.
"""

from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime
from dagster._utils.schedules import is_valid_cron_string

__all__ = [
    "AssetGraphView",
    "CachingStaleStatusResolver",
    "StaleStatus",
    "TemporalContext",
    "get_current_datetime",
    "is_valid_cron_string",
]
