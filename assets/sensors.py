"""The shard sensor: new source files become new partitions (one run per range of new shards), and a changed
file re-runs its own shard's chain.

A file's data version is its content hash (raw_corpus records it). Files are re-hashed only when their
size or modification time (an object's ETag) changed since the last tick (kept in the cursor), so an idle
tick is cheap.
"""

from __future__ import annotations

import json

import dagster as dg

from assets.partitions import PER_SHARD_SELECTION, SHARDS, SHARDS_PER_RUN, shards
from assets.resources import TleditResource
from assets.staleness import range_tags, recorded_source
from tledit_pipeline.source import discover_shards, file_fingerprint
from tledit_pipeline.storage import stamp as file_stamp


@dg.sensor(target=PER_SHARD_SELECTION, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def shard_sensor(context: dg.SensorEvaluationContext, tledit: TleditResource) -> dg.SensorResult:
    s = tledit.settings()
    found = discover_shards(s.source, s.home)
    known = set(context.instance.get_dynamic_partitions(SHARDS))
    new = [sh.key for sh in found if sh.key not in known]
    seen: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
    # New shards are appended to the partitions in this order: contiguous ranges, one run per range.
    ranges = [new[i : i + SHARDS_PER_RUN] for i in range(0, len(new), SHARDS_PER_RUN)]
    requests = [
        dg.RunRequest(partition_key=r[0], run_key=f"new-shard:{r[0]}")
        if len(r) == 1
        else dg.RunRequest(run_key=f"new-shards:{r[0]}:{r[-1]}", tags=range_tags(r))
        for r in ranges
    ]
    for sh in found:
        stamp = file_stamp(sh.path)
        if sh.key in new or seen.get(sh.key, [None, None])[:2] == stamp:
            seen[sh.key] = stamp + seen.get(sh.key, [None, None, None])[2:]
            continue
        digest = file_fingerprint(sh.path)
        seen[sh.key] = stamp + [digest]
        recorded = recorded_version(context.instance, sh.key)
        if recorded is not None and recorded != digest:  # never built is `tledit run`'s / the schedule's job
            context.log.info(f"{sh.path.name} changed ({recorded} -> {digest}): re-running shard {sh.key}")
            requests.append(dg.RunRequest(partition_key=sh.key, run_key=f"changed:{sh.key}:{digest}"))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[shards.build_add_request(new)] if new else [],
        cursor=json.dumps(seen, sort_keys=True),
    )


def recorded_version(instance: dg.DagsterInstance, key: str) -> str | None:
    """The source file hash raw_corpus recorded for this shard (None if never built)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_corpus"), asset_partitions=[key]), limit=1
    ).records
    return recorded_source(records[0])[0] if records else None
