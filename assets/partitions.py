"""One partition per source shard file; the shard sensor and `tledit run` register new ones.

A shard stays the unit of lineage, but not of execution: every per-shard asset takes a range of shards
in one run (a single-run backfill, `context.partition_keys`), records one materialization per shard with
that shard's metadata, and reports the shards that failed by name, so the others are not lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from typing import Any

import dagster as dg

from tledit_pipeline.generations import generation_of, later_assets
from tledit_pipeline.steps import Markdown, PathValue, Text

SHARDS = "shards"
shards = dg.DynamicPartitionsDefinition(name=SHARDS)

# The per-shard chain, in dependency order; distribution_health is the one unpartitioned asset.
PER_SHARD = ["raw_corpus", "token_scores", "edited_corpus", "synthetic_corpus", "ngram_profile"]

# Every per-shard asset takes a contiguous range of at most SHARDS_PER_RUN shards per run (Dagster's
# single-run backfill, chunked): one policy for the whole chain, so a backfill of the daemon runs a range's
# whole chain in one run, a crash loses at most one range's records, and a run's memory stays bounded.
SHARDS_PER_RUN = 100
RANGES = dg.BackfillPolicy.multi_run(max_partitions_per_run=SHARDS_PER_RUN)

FAILED_SHARDS = "failed_shards"  # metadata key of a ShardsFailed failure: {shard: one-line reason}


class ShardsFailed(dg.Failure):
    """Some shards of a ranged step failed; the step fails and names them (metadata FAILED_SHARDS)."""

    def __init__(self, failed: dict[str, str], total: int):
        lines = [f"{k}: {why}" for k, why in failed.items()]
        super().__init__(
            description=f"{len(failed)} of {total} shard(s) failed: " + "; ".join(lines),
            metadata={FAILED_SHARDS: dg.MetadataValue.json(failed)},
        )


def failed_shards(failure_metadata: dict[str, Any]) -> dict[str, str]:
    """The {shard: reason} of a ShardsFailed failure's metadata ({} for any other failure)."""
    value = failure_metadata.get(FAILED_SHARDS)
    data = getattr(value, "data", None) if value is not None else None
    if isinstance(data, str):
        data = json.loads(data)
    return dict(data) if isinstance(data, dict) else {}


def for_each_shard(
    context: dg.AssetExecutionContext, work: Callable[[str], dict[str, Any]], keys: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Run `work(key)` for every shard of the run; its dict becomes that shard's materialization metadata.

    A shard that raises does not stop the others; the step then fails with ShardsFailed naming each
    failed shard and why (its files were not made visible: lake writes are atomic).
    """
    keys = list(context.partition_keys) if keys is None else keys

    def outcomes() -> Iterator[tuple[str, dict[str, Any] | Exception]]:
        for key in keys:
            try:
                yield key, work(key)
            except Exception as exc:  # reported per shard by record_shards, by name and reason
                yield key, exc

    return record_shards(context, outcomes(), len(keys))


def record_shards(
    context: dg.AssetExecutionContext, outcomes: Iterable[tuple[str, dict[str, Any] | Exception]], total: int
) -> dict[str, dict[str, Any]]:
    """One materialization's metadata per finished shard, in the order they finish (in process, or streamed
    back from the Ray engine's actors); then ShardsFailed naming every shard that failed."""
    done: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    # Dagster checks each add_asset_metadata's shard against every partition key: read them once (assets/instance.py).
    snapshot = getattr(context.instance.event_log_storage, "partitions_snapshot", None)
    with snapshot() if snapshot is not None else nullcontext():
        for key, meta in outcomes:
            if isinstance(meta, Exception):
                failed[key] = " ".join(str(meta).split()) or type(meta).__name__
                context.log.error(f"shard {key}: {failed[key]}")
                continue
            done[key] = meta
            context.add_asset_metadata(dagster_metadata(meta), partition_key=key)
    if failed:
        raise ShardsFailed(failed, total)
    return done


def dagster_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """An engine step's plain metadata (tledit_pipeline.steps) with its marked values as Dagster's kinds."""
    kinds = {Markdown: dg.MetadataValue.md, PathValue: dg.MetadataValue.path, Text: dg.MetadataValue.text}
    return {k: kinds[type(v)](str(v)) if type(v) in kinds else v for k, v in meta.items()}


def per_shard(generations: int = 1) -> list[str]:
    """The per-shard chain with later generations' assets (token_scores_g1, edited_corpus_g2, ...) after edited_corpus."""
    return PER_SHARD[:3] + later_assets(generations) + PER_SHARD[3:]


def chain(asset_graph) -> list[str]:
    """The per-shard chain of a built asset graph: its partitioned assets, in dependency order."""
    names = {k.to_user_string() for k in asset_graph.get_all_asset_keys() if asset_graph.get(k).partitions_def is not None}
    generations = max([g for n in names if n.startswith("edited_corpus") and (g := generation_of(n))] or [1])
    return [n for n in per_shard(generations) if n in names]


# Every per-shard asset, whatever the number of generations: what the sensor and the schedule may target
# (the unpartitioned distribution_health and collapse_probe are not, nor the edit sweep's assets, which
# `tledit sweep` materializes on request, group "sweep", nor the opt-in reference_perplexity, group "reference").
PER_SHARD_SELECTION = (
    dg.AssetSelection.all()
    - dg.AssetSelection.assets("distribution_health", "collapse_probe")
    - dg.AssetSelection.groups("sweep", "reference")
)
