"""ngram_profile (per shard) and distribution_health (whole corpus, in DuckDB)."""

import dagster as dg
import polars as pl

from assets.partitions import SHARDS, shards
from assets.resources import TleditResource
from tledit_pipeline.charts import line_chart_svg, svg_markdown
from tledit_pipeline.health import (
    build_health_table,
    document_perplexities,
    histograms_markdown,
    overview_markdown,
    per_shard_markdown,
    perplexity_polygons,
    profile_health,
    rank_frequency,
)
from tledit_pipeline.lake import partition_file, partition_meta, read_partition, rebuild_database, refresh_views, write_partition
from tledit_pipeline.ngrams import profile
from tledit_pipeline.probe import probe_view

ENGINE_VERSION = "2"

# Metrics shown per shard and as top-level numbers: the ones the checks and the paper's claims are about.
KEY_METRICS = {
    "raw": ("distinct_2", "top64_share", "ppl_p50"),
    "edited": ("tail_coverage", "js_divergence_vs_raw", "top64_share", "changed_share"),
    "synthetic": ("tail_coverage", "js_divergence_vs_raw", "top64_share", "ppl_p50"),
}


def _key_rows(health: pl.DataFrame) -> pl.DataFrame:
    pairs = pl.DataFrame([(v, m) for v, ms in KEY_METRICS.items() for m in ms], schema=["variant", "metric"], orient="row")
    return health.join(pairs, on=["variant", "metric"])


@dg.asset(
    partitions_def=shards,
    group_name="diagnostics",
    kinds={"polars", "parquet"},
    deps=["raw_corpus", "edited_corpus", "synthetic_corpus"],
    code_version=f"ngrams-{ENGINE_VERSION}",
)
def ngram_profile(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
    """Word n-gram counts (n = 1..3) and hashed uni+bigram buckets of each variant of one shard.

    Variants: raw, edited, synthetic (the baseline's documents) and raw_matched (the raw text of the same
    documents cut at the baseline's length: the size-matched yardstick for synthetic).
    """
    s = tledit.settings()
    key = context.partition_key
    syn = read_partition(s.home, "synthetic_corpus", key, columns=["text", "reference_text"])
    variants = {
        "raw": read_partition(s.home, "raw_corpus", key, columns=["text"]).column("text").to_pylist(),
        "edited": read_partition(s.home, "edited_corpus", key, columns=["text"]).column("text").to_pylist(),
        "synthetic": syn.column("text").to_pylist(),
        "raw_matched": syn.column("reference_text").to_pylist(),
    }
    prof = profile(key, variants)
    path = write_partition(s.home, "ngram_profile", key, prof.to_arrow())
    health = profile_health(path)  # the same SQL as distribution_health, over this partition only
    meta = {f"{r['variant']}/{r['metric']}": round(r["value"], 5) for r in _key_rows(health).iter_rows(named=True)}
    return dg.MaterializeResult(
        metadata=meta
        | {
            "rows": prof.height,
            "documents": dg.MetadataValue.json({v: len(t) for v, t in variants.items()}),
            "metrics": dg.MetadataValue.md(overview_markdown(health, shard=key)),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


# Rebuilt once the shards it reads have new materializations and none is still running, so a refresh of
# many shards (the schedule, the sensor) is followed by one rebuild. `tledit run` builds it itself.
HEALTH_CONDITION = (
    (dg.AutomationCondition.missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("shards updated and none in progress")


@dg.asset(
    group_name="diagnostics",
    kinds={"duckdb"},
    deps=["ngram_profile", "token_scores", "edited_corpus", "synthetic_corpus"],
    code_version=f"health-{ENGINE_VERSION}",
    automation_condition=HEALTH_CONDITION,
)
def distribution_health(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
    """Cross-shard health in DuckDB: views over the lake plus table distribution_health(variant, shard, metric, value)."""
    s = tledit.settings()
    keys = context.instance.get_dynamic_partitions(SHARDS)
    with rebuild_database(s.home) as con:  # a new file renamed into place: parallel runs never lock
        views = refresh_views(con, s.home, keys)
        views += ["collapse_probe"] if probe_view(con, s.home) else []  # the probe's lake table, once it has run
        health = build_health_table(con)
        zipf = rank_frequency(con, n=1)
        ppl = document_perplexities(con)
    versions = {}
    for asset, field in (("edited_corpus", "edit"), ("synthetic_corpus", "synthetic")):
        versions[asset] = sorted(
            {partition_meta(s.home, asset, k).get(field, "?") for k in keys if partition_file(s.home, asset, k).exists()}
        )
        if len(versions[asset]) > 1:
            context.log.warning(f"{asset} shards were built with different settings: {versions[asset]}; backfill the stale ones")
    rank_series = {v: list(zip(g["rank"].to_list(), g["freq"].to_list())) for (v,), g in zipf.group_by("variant", maintain_order=True)}
    rank_chart = line_chart_svg(
        rank_series, "Rank-frequency of words (whole corpus)", "rank", "relative frequency", log_x=True, log_y=True
    )
    ppl_chart = line_chart_svg(
        perplexity_polygons(ppl),
        "Per-document perplexity under the prior", "perplexity (log scale)", "share of documents", log_x=True,
    )
    ppl_rows = health.filter(pl.col("metric").str.starts_with("ppl_"))
    overall = {f"{r['variant']}/{r['metric']}": round(r["value"], 5) for r in _key_rows(health.filter(pl.col("shard") == "__all__")).iter_rows(named=True)}
    return dg.MaterializeResult(
        metadata={
            "duckdb": dg.MetadataValue.path(str(s.duckdb_path)),
            "edit_settings": "; ".join(versions["edited_corpus"]),
            "synthetic_settings": "; ".join(versions["synthetic_corpus"]),
            "registered_shards": ",".join(sorted(keys)),
            "views": ", ".join(views),
            "rows": health.height,
            "shards": health.filter(pl.col("shard") != "__all__").get_column("shard").n_unique(),
            "probability_histogram": dg.MetadataValue.md(histograms_markdown(health)),
            "rank_frequency": dg.MetadataValue.md(
                svg_markdown(rank_chart, "rank-frequency, log-log")
                + "\n\nWords ranked by frequency, log-log. A synthetic corpus that collapses bends down early: "
                "fewer distinct words, more mass on the head. raw_matched is the raw text of the baseline's own "
                "documents at the same lengths."
            ),
            "perplexity": dg.MetadataValue.md(
                svg_markdown(ppl_chart, "perplexity distributions")
                + "\n\n"
                + overview_markdown(ppl_rows)
                + "\n\nraw: every token after the first, teacher-forced; synthetic: the sampled tokens' own log-probs; "
                "raw_matched: the raw tokens at the positions the baseline generated."
            ),
            "overall": dg.MetadataValue.md(overview_markdown(health)),
            "per_shard": dg.MetadataValue.md(per_shard_markdown(_key_rows(health), tuple(m for ms in KEY_METRICS.values() for m in ms))),
        }
        | overall
    )


health_automation = dg.AutomationConditionSensorDefinition(
    "health_automation", target=["distribution_health"], default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=60
)
