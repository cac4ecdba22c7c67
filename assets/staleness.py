"""What is missing or stale, per shard: what `tledit run`, the refresh schedule and the shard sensor materialize.

One pass over all partitions, from Dagster's own records: for each per-shard asset, the latest
materialization of every partition (two queries per asset, whatever the number of shards). A shard's
asset is out of date when it was never materialized, its lake file is gone, its recorded code version
differs from the current one (the edit settings are in edited_corpus's, the model and scoring settings in
token_scores's), an asset it reads in the same shard was materialized after it, or, for raw_corpus, the
source file changed. A file is re-hashed only when its size or modification time differs from the ones
raw_corpus recorded. Everything downstream (within the shard) of an out-of-date asset is redone too.

What the plan reads of each latest materialization (its storage id, code version and, for raw_corpus,
the source file's stamp) comes from the event log's indexes: the storage id per partition, and the tags
Dagster indexes per asset event (assets/instance.py indexes these few besides the data version). Only a
partition whose indexed values are missing (an older record, or an instance with another event log
storage) has its whole record read, so a plan over 1000 shards deserializes no record at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from assets.dagster_internals import EventLogRecord
from assets.instance import CODE_VERSION_TAG, INDEXED_SOURCE, metadata_tag
from assets.partitions import PER_SHARD, chain
from assets.raw import SOURCE_MTIME, SOURCE_SHA, SOURCE_SIZE
from tledit_pipeline import storage
from tledit_pipeline.database import DUCKDB_FILE
from tledit_pipeline.lake import partition_file
from tledit_pipeline.settings import Settings
from tledit_pipeline.source import Shard, file_fingerprint

HEALTH = dg.AssetKey("distribution_health")
DATA_VERSION_TAG = "dagster/data_version"
REGISTERED = "registered_shards_sha256"  # distribution_health metadata: which shards it was built over
_CHUNK = 500  # storage ids per query (SQLite's bound-parameter limit is far above)


@dataclass(frozen=True)
class ShardWork:
    """The assets of one shard to materialize (in chain order) and why; empty when it is current."""

    key: str
    assets: tuple[str, ...]
    reason: str = ""


def latest_materializations(
    instance: dg.DagsterInstance, asset: str, keys: Iterable[str] | None = None
) -> dict[str, EventLogRecord]:
    """The latest materialization record of each partition of `asset` (of `keys` only, if given)."""
    ak = dg.AssetKey(asset)
    ids = instance.event_log_storage.get_latest_storage_id_by_partition(ak, dg.DagsterEventType.ASSET_MATERIALIZATION)
    if keys is not None:
        wanted = set(keys)
        ids = {k: v for k, v in ids.items() if k in wanted}
    out: dict[str, EventLogRecord] = {}
    values = sorted(ids.values())
    for i in range(0, len(values), _CHUNK):
        chunk = values[i : i + _CHUNK]
        for r in instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=ak, storage_ids=chunk), limit=len(chunk)
        ).records:
            out[r.partition_key] = r
    return out


def recorded_source(record: EventLogRecord) -> tuple[str | None, int | None, str | None]:
    """(content hash, size, mtime_ns) of the source file raw_corpus read; older records have only the hash."""
    mat = record.asset_materialization
    md = mat.metadata if mat else {}

    def value(name: str):
        v = md.get(name)
        return getattr(v, "value", v) if v is not None else None

    sha = value(SOURCE_SHA) or (mat.tags or {}).get(DATA_VERSION_TAG) if mat else None
    return sha, value(SOURCE_SIZE), value(SOURCE_MTIME)


@dataclass(frozen=True)
class Latest:
    """What the plan needs of a partition's latest materialization."""

    storage_id: int
    code_version: str | None
    source: tuple[str | None, int | None, str | None] = (None, None, None)  # raw_corpus: sha, size, mtime


def latest_state(instance: dg.DagsterInstance, asset: str, keys: Sequence[str], source: bool = False) -> dict[str, Latest]:
    """Latest per partition of `keys`: from the indexes (two queries), reading records only where they lack a value."""
    ak = dg.AssetKey(asset)
    storage = instance.event_log_storage
    wanted = set(keys)
    ids = {
        k: v
        for k, v in storage.get_latest_storage_id_by_partition(ak, dg.DagsterEventType.ASSET_MATERIALIZATION).items()
        if k in wanted
    }
    tag_keys = [CODE_VERSION_TAG] + ([metadata_tag(n) for n in INDEXED_SOURCE] if source else [])
    tags: dict = {}
    if ids and storage.get_asset_tags_to_index(set(tag_keys)) == set(tag_keys):
        tags = storage.get_latest_tags_by_partition(ak, dg.DagsterEventType.ASSET_MATERIALIZATION, tag_keys)
    out: dict[str, Latest] = {}
    unindexed = []
    for key, sid in ids.items():
        t = tags.get(key, {})
        if not all(k in t for k in tag_keys):
            unindexed.append(key)
            continue
        stamp = tuple(t[metadata_tag(n)] for n in INDEXED_SOURCE) if source else (None, None, None)
        out[key] = Latest(sid, t[CODE_VERSION_TAG], (stamp[0], int(stamp[1]), stamp[2]) if source else stamp)
    for key, rec in (latest_materializations(instance, asset, unindexed) if unindexed else {}).items():
        mat = rec.asset_materialization
        out[key] = Latest(rec.storage_id, (mat.tags or {}).get(CODE_VERSION_TAG) if mat else None, recorded_source(rec))
    return out


def source_changed(shard: Shard, recorded: tuple[str | None, int | None, str | None]) -> bool:
    """Whether the file differs from the one raw_corpus read: stat first, hash only if the stat differs."""
    sha, size, mtime = recorded
    now_size, now_hint = storage.stamp(shard.path)
    if size is not None and mtime is not None and int(size) == now_size and str(mtime) == str(now_hint):
        return False
    return sha != file_fingerprint(shard.path)


def plan(instance: dg.DagsterInstance, asset_graph, settings: Settings, shards: Iterable[Shard]) -> list[ShardWork]:
    """One ShardWork per shard: its missing or stale assets plus everything downstream of them in the shard.

    Downstream follows the graph, not the list order: a new edit threshold redoes edited_corpus and
    ngram_profile but not synthetic_corpus (which reads only raw_corpus), and a new synthetic setting does
    not rescore the corpus.
    """
    shards = list(shards)
    keys = [s.key for s in shards]
    names = chain(asset_graph)  # PER_SHARD plus later generations' assets
    parents = {
        name: [p.to_user_string() for p in asset_graph.get(dg.AssetKey(name)).parent_keys if p.to_user_string() in names]
        for name in names
    }
    code = {name: asset_graph.get(dg.AssetKey(name)).code_version for name in names}
    latest = {name: latest_state(instance, name, keys, source=name == PER_SHARD[0]) for name in names}

    def why_out_of_date(shard: Shard, name: str) -> str | None:
        rec = latest[name].get(shard.key)
        if rec is None:
            return f"{name} missing"
        if not partition_file(settings.home, name, shard.key).exists():
            return f"{name} file missing from the lake"
        if code[name] and rec.code_version != code[name]:
            return f"{name} has a new code version"
        for p in parents[name]:
            up = latest[p].get(shard.key)
            if up is not None and up.storage_id > rec.storage_id:
                return f"{name} has a new dependency materialization ({p})"
        if name == PER_SHARD[0] and source_changed(shard, rec.source):
            return f"source file {shard.path.name} changed"
        return None

    out = []
    for shard in shards:
        redo: list[str] = []
        first = ""
        for name in names:  # dependency order
            if set(parents[name]) & set(redo):
                redo.append(name)
                continue
            why = why_out_of_date(shard, name)
            if why:
                redo.append(name)
                first = first or why
        out.append(ShardWork(shard.key, tuple(redo), first))
    return out


@dataclass
class Batch:
    """One run: the same assets for a contiguous range of shards (a single-run backfill)."""

    assets: tuple[str, ...]
    keys: list[str]
    reason: str


def batches(work: dict[str, tuple[tuple[str, ...], str]], order: Sequence[str], asset_graph) -> list[Batch]:
    """The plan as runs: shards with the same assets, in contiguous ranges of the partition order, at most
    the smallest max_partitions_per_run of their assets' backfill policies per run (Dagster's own rule)."""
    position = {k: i for i, k in enumerate(order)}
    groups: dict[tuple[str, ...], list[str]] = {}
    for key in sorted((k for k, (a, _) in work.items() if a), key=position.__getitem__):
        groups.setdefault(work[key][0], []).append(key)
    out = []
    for assets, keys in groups.items():
        limits = [
            p.max_partitions_per_run
            for a in assets
            if (p := asset_graph.get(dg.AssetKey(a)).backfill_policy) and p.max_partitions_per_run
        ]
        size = min(limits, default=len(keys))
        run: list[str] = []
        for key in keys:
            if run and (position[key] != position[run[-1]] + 1 or len(run) == size):
                out.append(Batch(assets, run, work[run[0]][1]))
                run = []
            run.append(key)
        out.append(Batch(assets, run, work[run[0]][1]))
    return out


def range_tags(keys: Sequence[str]) -> dict[str, str]:
    """The run tags of a single-run backfill over a contiguous range of shards (Dagster's own)."""
    return {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}


def shards_digest(keys: Iterable[str]) -> str:
    """Which shards distribution_health was built over, in 16 hex digits (the list itself can be 10^4 keys)."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def whole_asset_out_of_date(instance: dg.DagsterInstance, asset_graph, key: dg.AssetKey) -> tuple[str, object]:
    """Why an unpartitioned asset built from the corpus needs building again ('' when current): missing, a new
    code version, or an asset it reads materialized after it; and its latest materialization (or None)."""
    name = key.to_user_string()
    built = instance.get_latest_materialization_event(key)
    if built is None or built.asset_materialization is None:
        return f"{name} missing", None
    current = asset_graph.get(key).code_version
    if current and (built.asset_materialization.tags or {}).get(CODE_VERSION_TAG) != current:
        return f"{name} has a new code version", built
    parents = asset_graph.get(key).parent_keys
    newest = max((e.timestamp for k in parents if (e := instance.get_latest_materialization_event(k))), default=0.0)
    return ("corpus variants were materialized after it" if newest > built.timestamp else ""), built


def health_out_of_date(instance: dg.DagsterInstance, asset_graph, keys: Sequence[str], home: Path | None = None) -> str:
    """Why distribution_health needs a rebuild ('' when it is current): missing, its DuckDB file gone,
    new code, shards materialized after it, or another set of registered shards. One query."""
    per_shard = [dg.AssetKey(n) for n in chain(asset_graph)]
    records = {r.asset_entry.asset_key: r.asset_entry for r in instance.get_asset_records([HEALTH, *per_shard])}
    built = records.get(HEALTH)
    built = built.last_materialization_record if built else None
    if built is None:
        return "distribution_health missing"
    if home is not None and not (storage.location(home) / DUCKDB_FILE).exists():
        return f"{DUCKDB_FILE} missing"
    mat = built.asset_materialization
    current = asset_graph.get(HEALTH).code_version
    if current and (mat.tags or {}).get(CODE_VERSION_TAG) != current:
        return "distribution_health has a new code version"
    newest = max(
        (e.last_materialization_record.storage_id for k in per_shard if (e := records.get(k)) and e.last_materialization_record),
        default=0,
    )
    if newest > built.storage_id:
        return "shards were materialized after it"
    shown = mat.metadata.get(REGISTERED)
    if shown is None or shown.value != shards_digest(keys):
        return "the registered shards changed"
    return ""
