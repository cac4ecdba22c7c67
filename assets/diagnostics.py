"""ngram_profile (per shard) and distribution_health (whole corpus, in DuckDB)."""

import dagster as dg
import polars as pl

from assets.partitions import SHARDS, shards
from assets.resources import TleditResource
from tledit_pipeline.health import (
    build_health_table,
    concentration,
    histogram_chart,
    overview_markdown,
    per_shard_markdown,
)
from tledit_pipeline.lake import partition_file, partition_meta, read_partition, rebuild_database, refresh_views, write_partition
from tledit_pipeline.ngrams import profile

ENGINE_VERSION = "1"


@dg.asset(partitions_def=shards, group_name="diagnostics", kinds={"polars", "parquet"}, deps=["raw_corpus", "edited_corpus"], code_version=f"ngrams-{ENGINE_VERSION}")
def ngram_profile(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
    """Word n-gram counts (n = 1..3) of the raw and edited text of one shard."""
    s = tledit.settings()
    key = context.partition_key
    variants = {
        name: read_partition(s.home, name + "_corpus", key, columns=["text"]).column("text").to_pylist()
        for name in ("raw", "edited")
    }
    prof = profile(key, variants)
    write_partition(s.home, "ngram_profile", key, prof.to_arrow())
    metrics = {v: concentration(prof.filter(pl.col("variant") == v).drop("variant", "shard")) for v in variants}
    meta = {f"{v}/{m}": round(x, 5) for v, ms in metrics.items() for m, x in ms.items() if m.startswith(("distinct", "entropy", "top64"))}
    return dg.MaterializeResult(
        metadata=meta | {"rows": prof.height, "path": dg.MetadataValue.path(str(partition_file(s.home, "ngram_profile", key)))}
    )


# Rebuilt once the shards it reads have new materializations and none is still running, so a refresh of
# many shards (the schedule, the sensor) is followed by one rebuild. `tledit run` builds it itself.
HEALTH_CONDITION = (
    (dg.AutomationCondition.missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("shards updated and none in progress")


@dg.asset(group_name="diagnostics", kinds={"duckdb"}, deps=["ngram_profile", "token_scores", "edited_corpus"], code_version=f"health-{ENGINE_VERSION}",
          automation_condition=HEALTH_CONDITION)
def distribution_health(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
    """Cross-shard health in DuckDB: views over the lake plus table distribution_health(variant, shard, metric, value)."""
    s = tledit.settings()
    keys = context.instance.get_dynamic_partitions(SHARDS)
    with rebuild_database(s.home) as con:  # a new file renamed into place: parallel runs never lock
        views = refresh_views(con, s.home, keys)
        health = build_health_table(con)
    edit_versions = sorted(
        {partition_meta(s.home, "edited_corpus", k).get("edit", "?") for k in keys if partition_file(s.home, "edited_corpus", k).exists()}
    )
    if len(edit_versions) > 1:
        context.log.warning(f"shards were edited with different settings: {edit_versions}; backfill the stale ones")
    overall = {f"{r['variant']}/{r['metric']}": round(r["value"], 5) for r in health.filter(pl.col("shard") == "__all__").iter_rows(named=True)}
    hist = {r["metric"]: r["value"] for r in health.filter((pl.col("shard") == "__all__") & (pl.col("variant") == "raw")).iter_rows(named=True)}
    return dg.MaterializeResult(
        metadata={
            "duckdb": dg.MetadataValue.path(str(s.duckdb_path)),
            "edit_settings": "; ".join(edit_versions),
            "registered_shards": ",".join(sorted(keys)),
            "views": ", ".join(views),
            "rows": health.height,
            "shards": health.filter(pl.col("shard") != "__all__").get_column("shard").n_unique(),
            "probability_histogram": dg.MetadataValue.md(histogram_chart(hist)),
            "overall": dg.MetadataValue.md(overview_markdown(health)),
            "per_shard": dg.MetadataValue.md(
                per_shard_markdown(health, ("distinct_2", "top64_share", "eligible_share", "changed_share", "ppl_p50"))
            ),
        }
        | {k: v for k, v in overall.items() if k.split("/")[1] in ("distinct_2", "top64_share", "eligible_share", "changed_share", "prob_bin_099", "ppl_p50")}
    )


health_automation = dg.AutomationConditionSensorDefinition(
    "health_automation", target=["distribution_health"], default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=60
)
