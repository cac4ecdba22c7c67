"""The refresh schedule: on its cron (TLEDIT_REFRESH_CRON, default daily) it registers new shards and
requests one run per range of shards for whatever is missing or stale (the same plan and ranges as `tledit run`).

distribution_health is not in these runs: its automation condition rebuilds it once the shard runs
are done (see assets/diagnostics.py), so one rebuild follows a refresh of many shards.
"""

from __future__ import annotations

import dagster as dg

from assets.dagster_internals import is_valid_cron_string
from assets.partitions import PER_SHARD_SELECTION, SHARDS
from assets.resources import TleditResource
from assets.staleness import batches, plan, range_tags
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
        work = {w.key: (w.assets, w.reason) for w in plan(context.instance, context.repository_def.asset_graph, s, found)}
        if not any(assets for assets, _ in work.values()):
            return dg.SkipReason(f"all {len(found)} shard(s) are up to date")
        tick = context.scheduled_execution_time.isoformat()
        # One run per contiguous range of shards that need the same assets (a single-run backfill each),
        # the ranges `tledit run` would run: thousands of stale shards are tens of runs, not thousands.
        order = context.instance.get_dynamic_partitions(SHARDS)
        return [
            dg.RunRequest(
                run_key=f"refresh:{tick}:{b.keys[0]}:{b.keys[-1]}:{','.join(b.assets)}",
                partition_key=b.keys[0] if len(b.keys) == 1 else None,
                asset_selection=[dg.AssetKey(a) for a in b.assets],
                tags={"tledit/reason": b.reason[:200]} | (range_tags(b.keys) if len(b.keys) > 1 else {}),
            )
            for b in batches(work, order, context.repository_def.asset_graph)
        ]

    return refresh_schedule
