"""The edit sweep in Dagster: sweep_edited, one partition per (sweep point, shard), and edit_sweep, the table.

A sweep point is a variant of the edited corpus named by its full edit settings (tledit_pipeline/sweep.py:
`p0_9-k8-b1_5-s0`). Points are a dynamic partition dimension of their own ("sweep_points"), crossed with the
shards: every (point, shard) is a partition with its own lineage from that shard's raw_corpus, token_scores
and ngram_profile (Dagster maps the shard dimension by itself), its own materialization and metadata, and a
whole sweep of contiguous points runs as one multi-dimensional range (one run). The edit reads stored
scores: nothing in a sweep loads the prior. `tledit sweep` registers the points and runs what is missing or
stale; edit_sweep gathers every complete point into one table and one chart.
"""

import time
from collections.abc import Sequence

import dagster as dg

from assets.lineage import run_settings
from assets.partitions import SHARDS, SHARDS_PER_RUN, for_each_shard, shards
from assets.resources import TleditResource, reporter
from assets.staleness import latest_state
from tledit_pipeline.charts import svg_markdown
from tledit_pipeline.database import add_file_view
from tledit_pipeline.lake import is_shard_key, partition_file
from tledit_pipeline.settings import Settings
from tledit_pipeline.sweep import (
    SWEEP_EDITED,
    SWEEP_HEALTH,
    SWEEP_KEY,
    SWEEP_TABLE,
    build_sweep,
    markdown_table,
    pair_key,
    point_settings,
    sweep_chart,
    sweep_shard,
    wide_table,
    write_sweep,
)

SWEEP_POINTS = "sweep_points"
points = dg.DynamicPartitionsDefinition(name=SWEEP_POINTS)
POINT, SHARD = "point", "shard"
sweep_partitions = dg.MultiPartitionsDefinition({POINT: points, SHARD: shards})
SWEEP_ASSETS = (SWEEP_EDITED, SWEEP_TABLE)
ENGINE_VERSION = "1"


def code_version(settings: Settings) -> str:
    """No run setting changes a point: its partition key names every edit setting it is made with."""
    return f"sweep-{ENGINE_VERSION}"


def pair(key: str) -> tuple[str, str]:
    """(point, shard) of a sweep_edited partition key."""
    by_dim = getattr(key, "keys_by_dimension", None)
    if by_dim:
        return by_dim[POINT], by_dim[SHARD]
    point, shard = sweep_partitions.get_partition_key_from_str(key).keys_by_dimension.values()
    return point, shard


def multi_key(point: str, shard: str) -> str:
    return dg.MultiPartitionKey({POINT: point, SHARD: shard})


def build_sweep_edited(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        name=SWEEP_EDITED,
        partitions_def=sweep_partitions,
        group_name="sweep",
        kinds={"parquet", "polars"},
        deps=["raw_corpus", "token_scores", "ngram_profile"],
        code_version=code_version(settings),
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=SHARDS_PER_RUN),
    )
    def sweep_edited(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
        """One sweep point's edit of one shard, from stored scores (never the prior), and its health rows."""
        s = run_settings(tledit, SWEEP_EDITED, settings, code_version)

        def one(key: str) -> dict:
            point, shard = pair(key)
            t0 = time.perf_counter()
            rows = sweep_shard(s.home, point, shard)
            v = dict(zip(rows.get_column("metric").to_list(), rows.get_column("value").to_list(), strict=True))
            reporter(context, key)(
                f"sweep {point}: {int(v['changed_tokens']):,} of {int(v['scored_tokens']):,} tokens changed, "
                f"tail_coverage {v.get('tail_coverage', float('nan')):.4f} in {time.perf_counter() - t0:.2f}s"
            )
            return {
                "point": point,
                "shard": shard,
                "edit_settings": point_settings(point).version(),
                **{m: round(v[m], 6) for m in ("changed_share", "eligible_share", "deleted_share") if m in v},
                **{m: round(v[m], 6) for m in ("tail_coverage", "js_divergence_vs_raw", "top64_share") if m in v},
                "path": dg.MetadataValue.path(str(partition_file(s.home, SWEEP_EDITED, pair_key(point, shard)))),
            }

        return dg.MaterializeResult(metadata={"partitions_in_run": len(for_each_shard(context, one))})

    return sweep_edited


def complete_points(instance: dg.DagsterInstance, home, keys: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(points every registered shard of which has its health rows in the lake, the shards), points in
    threshold order, weakest edit first."""
    order = [k for k in instance.get_dynamic_partitions(SHARDS) if is_shard_key(k)]
    pts = keys if keys is not None else instance.get_dynamic_partitions(SWEEP_POINTS)
    done = [p for p in pts if all(partition_file(home, SWEEP_HEALTH, pair_key(p, s)).exists() for s in order)]
    return sorted(done, key=lambda p: (-point_settings(p).threshold, p)), order


def build_edit_sweep(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        name=SWEEP_TABLE,
        group_name="sweep",
        kinds={"duckdb"},
        deps=[SWEEP_EDITED],
        code_version=code_version(settings),
    )
    def edit_sweep(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
        """Every complete sweep point measured on the whole corpus: one table and one chart (and table edit_sweep)."""
        s = run_settings(tledit, SWEEP_TABLE, settings, code_version)
        done, order = complete_points(context.instance, s.home)
        if not done:
            raise dg.Failure("no sweep point is materialized for every shard; run `tledit sweep --thresholds ...`")
        skipped = sorted(set(context.instance.get_dynamic_partitions(SWEEP_POINTS)) - set(done))
        if skipped:
            context.log.warning(f"sweep points not materialized for every shard, left out: {', '.join(skipped)}")
        health = build_sweep(s.home, done, order)
        path = write_sweep(s.home, health, done, {"shards": len(order)})
        add_file_view(s.home, SWEEP_TABLE, partition_file(s.home, SWEEP_TABLE, SWEEP_KEY))
        rows = wide_table(health, done, checks=s.checks)
        reporter(context)(f"edit_sweep: {len(done)} point(s) over {len(order)} shard(s)")
        return dg.MaterializeResult(
            metadata={
                "points": len(done),
                "shards": len(order),
                "sweep": dg.MetadataValue.md(
                    svg_markdown(sweep_chart(rows), "edit sweep")
                    + "\n\n"
                    + markdown_table(rows)
                    + "\n\nWhole corpus. Each point is edited from the stored scores (no model). tail_coverage: "
                    "share of raw's rare bigrams (count <= 2) the point's text still has; js_divergence_vs_raw: "
                    "Jensen-Shannon divergence of hashed uni+bigram features from raw's (bits); top64_share: the "
                    "64 commonest bigrams' share of all (concentration). checks_pass: the health checks' rule "
                    "(docs/health.md) on the whole corpus. The point where the curves leave 0 is where editing "
                    "starts to cost the tail."
                ),
                "path": dg.MetadataValue.path(str(path)),
            }
        )

    return edit_sweep


def build(settings: Settings) -> list[dg.AssetsDefinition]:
    return [build_sweep_edited(settings), build_edit_sweep(settings)]


def stale_points(instance: dg.DagsterInstance, asset_graph, wanted: Sequence[str], order: Sequence[str]) -> dict[str, str]:
    """{point: why} for the points of `wanted` that a shard lacks, that have another code version, or whose
    shard's scores or raw counts were materialized after them."""
    current = asset_graph.get(dg.AssetKey(SWEEP_EDITED)).code_version
    keys = {(p, s): multi_key(p, s) for p in wanted for s in order}
    done = latest_state(instance, SWEEP_EDITED, list(keys.values()))
    upstream = {a: latest_state(instance, a, list(order)) for a in ("token_scores", "ngram_profile")}
    out: dict[str, str] = {}
    for (p, s), k in keys.items():
        if p in out:
            continue
        mine = done.get(k)
        if mine is None:
            out[p] = f"shard {s} missing"
        elif mine.code_version != current:
            out[p] = "new code version"
        elif any((u := upstream[a].get(s)) is not None and u.storage_id > mine.storage_id for a in upstream):
            out[p] = f"shard {s} rescored or recounted after it"
    return out


def runs(stale: Sequence[str], registered: Sequence[str]) -> list[list[str]]:
    """The stale points as contiguous runs of the registered order: each one Dagster range (one run)."""
    at = {p: i for i, p in enumerate(registered)}
    out: list[list[str]] = []
    for p in sorted(stale, key=at.__getitem__):
        if out and at[out[-1][-1]] == at[p] - 1:
            out[-1].append(p)
        else:
            out.append([p])
    return out
