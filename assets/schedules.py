"""The refresh schedule: on its cron (TLEDIT_REFRESH_CRON, default daily) it registers new shards and
requests one run per shard for whatever is missing or stale (the same plan as `tledit run`).

distribution_health is not in these runs: its automation condition rebuilds it once the shard runs
are done (see assets/diagnostics.py), so one rebuild follows a refresh of many shards.
"""

from __future__ import annotations

import dagster as dg

from assets.dagster_internals import is_valid_cron_string
from assets.partitions import PER_SHARD_SELECTION, SHARDS
from assets.resources import TleditResource
from assets.staleness import plan
from tledit_pipeline.settings import Settings, SettingsError
from tledit_pipeline.source import discover_shards


def build(settings: Settings) -> dg.ScheduleDefinition:
    if not is_valid_cron_string(settings.refresh_cron):
        raise SettingsError(f"TLEDIT_REFRESH_CRON={settings.refresh_cron!r} is not a valid cron schedule")

    @dg.schedule(
        cron_schedule=settings.refresh_cron,
        target=PER_SHARD_SELECTION,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def refresh_schedule(context: dg.ScheduleEvaluationContext, tledit: TleditResource):
        """Keeps every shard current: new files, changed files, changed settings."""
        s = tledit.settings()
        found = discover_shards(s.source, s.home)
        known = set(context.instance.get_dynamic_partitions(SHARDS))
        new = [sh.key for sh in found if sh.key not in known]
        if new:
            context.instance.add_dynamic_partitions(SHARDS, new)
        work = [w for w in plan(context.instance, context.repository_def.asset_graph, s, found) if w.assets]
        if not work:
            return dg.SkipReason(f"all {len(found)} shard(s) are up to date")
        tick = context.scheduled_execution_time.isoformat()
        return [
            dg.RunRequest(
                run_key=f"refresh:{tick}:{w.key}",
                partition_key=w.key,
                asset_selection=[dg.AssetKey(a) for a in w.assets],
                tags={"tledit/reason": w.reason[:200]},
            )
            for w in work
        ]

    return refresh_schedule
