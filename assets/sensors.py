"""The shard sensor: new source files become new partitions, and a changed file re-runs its own shard's chain.

A file's data version is its content hash (raw_corpus records it). Files are re-hashed only when their
size or modification time changed since the last tick (kept in the cursor), so an idle tick is cheap.
"""

from __future__ import annotations

import json

import dagster as dg

from assets.partitions import PER_SHARD_SELECTION, SHARDS, shards
from assets.resources import TleditResource
from tledit_pipeline.source import discover_shards, file_fingerprint


@dg.sensor(target=PER_SHARD_SELECTION, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def shard_sensor(context: dg.SensorEvaluationContext, tledit: TleditResource) -> dg.SensorResult:
    s = tledit.settings()
    found = discover_shards(s.source, s.home)
    known = set(context.instance.get_dynamic_partitions(SHARDS))
    new = [sh.key for sh in found if sh.key not in known]
    seen: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
    requests = [dg.RunRequest(partition_key=k, run_key=f"new-shard:{k}") for k in new]
    for sh in found:
        st = sh.path.stat()
        stamp = [st.st_size, st.st_mtime_ns]
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
    """The source file hash raw_corpus recorded as its data version for this shard (None if never built)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_corpus"), asset_partitions=[key]), limit=1
    ).records
    if not records:
        return None
    return records[0].asset_materialization.tags.get("dagster/data_version")
