"""The shard sensor: new source files become new partitions and get a run of the per-shard chain."""

import dagster as dg

from assets.partitions import PER_SHARD, SHARDS, shards
from assets.resources import TleditResource
from tledit_pipeline.source import discover_shards


@dg.sensor(target=dg.AssetSelection.assets(*PER_SHARD), minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def shard_sensor(context: dg.SensorEvaluationContext, tledit: TleditResource) -> dg.SensorResult:
    s = tledit.settings()
    found = [sh.key for sh in discover_shards(s.source, s.home)]
    known = set(context.instance.get_dynamic_partitions(SHARDS))
    new = [k for k in found if k not in known]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=k, run_key=f"new-shard:{k}") for k in new],
        dynamic_partitions_requests=[shards.build_add_request(new)] if new else [],
    )
