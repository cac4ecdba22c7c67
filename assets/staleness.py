"""What is missing or stale, per shard: what `tledit run`, the refresh schedule and the shard sensor materialize.

Dagster's own data-version machinery decides (the UI's "materialize changed and missing"): an asset is
stale when its code version changed (the edit settings are in edited_corpus's, the model and scoring
settings in token_scores's) or an input's data version changed. raw_corpus's data version is its source
file's content hash, so a changed file is caught by comparing the file with the recorded version.
Dagster reports staleness one level deep only, so everything downstream (within the shard) of a missing
or stale asset is redone too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import dagster as dg

from assets.dagster_internals import AssetGraphView, CachingStaleStatusResolver, StaleStatus, TemporalContext, get_current_datetime
from assets.partitions import PER_SHARD, chain
from tledit_pipeline.lake import partition_file
from tledit_pipeline.settings import Settings
from tledit_pipeline.source import Shard, file_fingerprint

HEALTH = dg.AssetKey("distribution_health")


@dataclass(frozen=True)
class ShardWork:
    """The assets of one shard to materialize (in chain order) and why; empty when it is current."""

    key: str
    assets: tuple[str, ...]
    reason: str = ""


def resolver(instance: dg.DagsterInstance, asset_graph) -> CachingStaleStatusResolver:
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=asset_graph,
    )
    return CachingStaleStatusResolver(instance=instance, asset_graph=asset_graph, loading_context=view)


def _why_out_of_date(res: CachingStaleStatusResolver, settings: Settings, shard: Shard, name: str) -> str | None:
    key = dg.AssetKey(name)
    status = res.get_status(key, shard.key)
    if status == StaleStatus.MISSING:
        return f"{name} missing"
    if not partition_file(settings.home, name, shard.key).exists():
        return f"{name} file missing from the lake"
    if status == StaleStatus.STALE:
        causes = res.get_stale_causes(key, shard.key)
        return f"{name} {causes[0].reason if causes else 'stale'}"
    if name == PER_SHARD[0] and res.get_current_data_version(key, shard.key).value != file_fingerprint(shard.path):
        return f"source file {shard.path.name} changed"
    return None


def plan(instance: dg.DagsterInstance, asset_graph, settings: Settings, shards: Iterable[Shard]) -> list[ShardWork]:
    """One ShardWork per shard: its missing or stale assets plus everything downstream of them in the shard.

    Downstream follows the graph, not the list order: a new edit threshold redoes edited_corpus and
    ngram_profile but not synthetic_corpus (which reads only raw_corpus), and a new synthetic setting does
    not rescore the corpus.
    """
    res = resolver(instance, asset_graph)
    names = chain(asset_graph)  # PER_SHARD plus later generations' assets
    parents = {
        name: {p.to_user_string() for p in asset_graph.get(dg.AssetKey(name)).parent_keys} & set(names)
        for name in names
    }
    out = []
    for shard in shards:
        redo: list[str] = []
        first = ""
        for name in names:  # dependency order
            if parents[name] & set(redo):
                redo.append(name)
                continue
            why = _why_out_of_date(res, settings, shard, name)
            if why:
                redo.append(name)
                first = first or why
        out.append(ShardWork(shard.key, tuple(redo), first))
    return out


def health_out_of_date(instance: dg.DagsterInstance, asset_graph, keys: Sequence[str]) -> str:
    """Why distribution_health needs a rebuild ('' when it is current): missing, new code, or newer shards."""
    res = resolver(instance, asset_graph)
    status = res.get_status(HEALTH)
    if status == StaleStatus.MISSING:
        return "distribution_health missing"
    if status == StaleStatus.STALE:
        causes = res.get_stale_causes(HEALTH)
        dep = causes[0].dependency if causes else None
        where = f" ({dep.asset_key.to_user_string()} {dep.partition_key or ''})".rstrip(" )") + ")" if dep else ""
        return f"distribution_health {causes[0].reason}{where}" if causes else "distribution_health stale"
    built = instance.get_latest_materialization_event(HEALTH)
    newest = max(
        (e.timestamp for name in chain(asset_graph) if (e := instance.get_latest_materialization_event(dg.AssetKey(name)))),
        default=0.0,
    )
    if built is None or newest > built.timestamp:
        return "shards were materialized after it"
    shown = (built.asset_materialization.metadata.get("registered_shards") if built.asset_materialization else None)
    if shown is not None and shown.value != ",".join(sorted(keys)):
        return "the registered shards changed"
    return ""
