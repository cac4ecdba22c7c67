"""ngram_profile (per shard) and distribution_health (whole corpus, in DuckDB)."""

import dagster as dg
import polars as pl

from assets.lineage import run_settings
from assets.partitions import RANGES, SHARDS, for_each_shard, shards
from assets.resources import TleditResource
from assets.staleness import REGISTERED, shards_digest
from tledit_pipeline.charts import line_chart_svg, svg_markdown
from tledit_pipeline.database import duckdb_connection, lake_table_view, rebuild_database, refresh_views
from tledit_pipeline.generations import later_assets, refresh_generation_views, text_asset, variant
from tledit_pipeline.health import (
    GENERATION_METRICS,
    HEALTH_VIEWS,
    SHARD_TABLES,
    build_health_table_from_shards,
    create_views,
    document_perplexities,
    generation_table,
    histograms_markdown,
    overview_markdown,
    per_shard_markdown,
    perplexity_polygons,
    rank_frequency,
    shard_health_rows,
)
from tledit_pipeline.lake import is_shard_key, partition_file, partition_meta, read_partition, write_partition
from tledit_pipeline.ngrams import profile
from tledit_pipeline.probe import probe_view
from tledit_pipeline.settings import Settings
from tledit_pipeline.source import REJECTED_FILES

ENGINE_VERSION = "5"  # 3: n_scored shares, deleted_share, every generation; 4: each shard's rows of distribution_health stored beside its counts; 5: hashed_features (the count-aware JS bound)
HEALTH_SHARDS_PER_PASS = 50

# Metrics shown per shard and as top-level numbers: the ones the checks and the paper's claims are about.
KEY_METRICS = {
    "raw": ("distinct_2", "top64_share", "ppl_p50"),
    "edited": ("tail_coverage", "js_divergence_vs_raw", "top64_share", "changed_share"),
    "synthetic": ("tail_coverage", "js_divergence_vs_raw", "top64_share", "ppl_p50"),
}


def _key_rows(health: pl.DataFrame) -> pl.DataFrame:
    pairs = pl.DataFrame([(v, m) for v, ms in KEY_METRICS.items() for m in ms], schema=["variant", "metric"], orient="row")
    return health.join(pairs, on=["variant", "metric"])


def _generations_version(settings: Settings) -> str:
    """Which generations the asset reads is part of its code version: a new N rebuilds the profiles and the table."""
    return f"|generations={settings.generations}" if settings.generations > 1 else ""


def ngram_version(settings: Settings) -> str:
    return f"ngrams-{ENGINE_VERSION}{_generations_version(settings)}"


def health_version(settings: Settings) -> str:
    return f"health-{ENGINE_VERSION}{_generations_version(settings)}"


def build_ngram_profile(settings: Settings) -> dg.AssetsDefinition:
    """ngram_profile reads every generation of the edited corpus (edited_corpus_g2, ... when generations > 1)."""

    def ngram_profile(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
        return count_ngrams(context, run_settings(tledit, "ngram_profile", settings, ngram_version))

    ngram_profile.__doc__ = count_ngrams.__doc__
    return dg.asset(
        name="ngram_profile",
        partitions_def=shards,
        group_name="diagnostics",
        kinds={"polars", "parquet", "duckdb"},
        # token_scores and the later generations' scores: the shard's rows of distribution_health read them.
        deps=["raw_corpus", "token_scores", "edited_corpus", *later_assets(settings.generations), "synthetic_corpus"],
        code_version=ngram_version(settings),
        backfill_policy=RANGES,
    )(ngram_profile)


def count_ngrams(context: dg.AssetExecutionContext, s: Settings) -> dg.MaterializeResult:
    """Word n-gram counts (n = 1..3) and hashed uni+bigram buckets of each variant of a shard, and the
    shard's own rows of distribution_health (lake tables shard_health and document_perplexity), so the
    whole-corpus table reuses them instead of recomputing every shard.

    Variants: raw, edited (and edited_g2, edited_g3, ...: later generations), synthetic (the baseline's
    documents) and raw_matched (the raw text of the same documents cut at the baseline's length: the
    size-matched yardstick for synthetic).
    """

    def count_one(key: str) -> dict:
        syn = read_partition(s.home, "synthetic_corpus", key, columns=["text", "reference_text"])
        variants = {
            "raw": read_partition(s.home, "raw_corpus", key, columns=["text"]).column("text").to_pylist(),
            "edited": read_partition(s.home, "edited_corpus", key, columns=["text"]).column("text").to_pylist(),
            **{
                variant(g): read_partition(s.home, text_asset(g), key, columns=["text"]).column("text").to_pylist()
                for g in range(2, s.generations + 1)
            },
            "synthetic": syn.column("text").to_pylist(),
            "raw_matched": syn.column("reference_text").to_pylist(),
        }
        prof = profile(key, variants)
        path = write_partition(s.home, "ngram_profile", key, prof.to_arrow())
        return {
            "rows": prof.height,
            "documents": dg.MetadataValue.json({v: len(t) for v, t in variants.items()}),
            "path": dg.MetadataValue.path(str(path)),
        }

    keys = sorted(for_each_shard(context, count_one))
    # The shards' health rows: one SQL pass per HEALTH_SHARDS_PER_PASS shards (a shard's rows depend on
    # that shard alone, so grouping changes nothing but the cost; a bounded group bounds the memory).
    for i in range(0, len(keys), HEALTH_SHARDS_PER_PASS):
        group = keys[i : i + HEALTH_SHARDS_PER_PASS]
        with duckdb_connection(":memory:", s.home) as con:  # a lake on a store is read through its filesystem
            create_views(con, s.home, {v: [partition_file(s.home, v, k) for k in group] for v in HEALTH_VIEWS})
            refresh_generation_views(con, s.home, group, s.generations)
            rows = shard_health_rows(con)
            ppl = document_perplexities(con)
        rows_by_shard = rows.partition_by("shard", as_dict=True)
        ppl_by_shard = ppl.partition_by("shard", as_dict=True)
        for_each_shard(
            context,
            lambda key, r=rows_by_shard, p=ppl_by_shard, e=(rows.clear(), ppl.clear()): _store_health(s.home, key, r, p, e),
            group,
        )
    return dg.MaterializeResult(metadata={"shards_in_run": len(keys)})


def _store_health(home, key: str, rows_by_shard: dict, ppl_by_shard: dict, empty: tuple) -> dict:
    """One shard's rows of distribution_health and its documents' perplexities, into the lake."""
    health = rows_by_shard.get((key,), empty[0])
    write_partition(home, "shard_health", key, health.to_arrow())
    write_partition(home, "document_perplexity", key, ppl_by_shard.get((key,), empty[1]).to_arrow())
    meta = {f"{r['variant']}/{r['metric']}": round(r["value"], 5) for r in _key_rows(health).iter_rows(named=True)}
    return meta | {"metrics": dg.MetadataValue.md(overview_markdown(health, shard=key))}


# Rebuilt once the shards it reads have new materializations and none is still running, so a refresh of
# many shards (the schedule, the sensor) is followed by one rebuild. `tledit run` builds it itself.
HEALTH_CONDITION = (
    (dg.AutomationCondition.missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("shards updated and none in progress")


def build_distribution_health(settings: Settings) -> dg.AssetsDefinition:
    """distribution_health reads every generation's edited text and scores (when generations > 1)."""

    def distribution_health(context: dg.AssetExecutionContext, tledit: TleditResource) -> dg.MaterializeResult:
        return build_health(context, run_settings(tledit, "distribution_health", settings, health_version))

    distribution_health.__doc__ = build_health.__doc__
    return dg.asset(
        name="distribution_health",
        group_name="diagnostics",
        kinds={"duckdb"},
        deps=["ngram_profile", "token_scores", "edited_corpus", *later_assets(settings.generations), "synthetic_corpus"],
        code_version=health_version(settings),
        automation_condition=HEALTH_CONDITION,
    )(distribution_health)


def build_health(context: dg.AssetExecutionContext, s: Settings) -> dg.MaterializeResult:
    """Cross-shard health in DuckDB: views over the lake plus table distribution_health(variant, shard, metric, value).

    Each shard's rows come from the lake (ngram_profile stored them); only the whole-corpus rows are computed.
    """
    keys = context.instance.get_dynamic_partitions(SHARDS)
    valid = sorted(k for k in keys if is_shard_key(k))
    with rebuild_database(s.home) as con:  # a new file renamed into place: parallel runs never lock
        views = refresh_views(con, s.home, keys)
        views += refresh_generation_views(con, s.home, keys, s.generations)
        stored = {t: [p for k in valid if (p := partition_file(s.home, t, k)).exists()] for t in SHARD_TABLES}
        if "ngram_profile" not in views or not all(stored.values()):
            raise FileNotFoundError("distribution_health needs ngram_profile for at least one shard; materialize it first")
        create_views(con, s.home, stored)
        views += list(SHARD_TABLES)
        views += [REJECTED_FILES] if lake_table_view(con, s.home, REJECTED_FILES) else []  # the source's files not taken
        views += ["collapse_probe"] if probe_view(con, s.home) else []  # the probe's lake table, once it has run
        health = build_health_table_from_shards(con)
        zipf = rank_frequency(con, n=1)
        ppl = pl.from_arrow(
            con.execute("SELECT variant, shard, ppl FROM document_perplexity ORDER BY variant, shard, ppl").to_arrow_table()
        )
    versions = {}
    for asset, field in [(text_asset(g), "edit") for g in range(1, s.generations + 1)] + [("synthetic_corpus", "synthetic")]:
        versions[asset] = sorted(
            {partition_meta(s.home, asset, k).get(field, "?") for k in valid if partition_file(s.home, asset, k).exists()}
        )
        if len(versions[asset]) > 1:
            context.log.warning(f"{asset} shards were built with different settings: {versions[asset]}; backfill the stale ones")
    rank_series = {
        v: list(zip(g["rank"].to_list(), g["freq"].to_list(), strict=True))
        for (v,), g in zipf.group_by("variant", maintain_order=True)
    }
    rank_chart = line_chart_svg(
        rank_series, "Rank-frequency of words (whole corpus)", "rank", "relative frequency", log_x=True, log_y=True
    )
    ppl_chart = line_chart_svg(
        perplexity_polygons(ppl),
        "Per-document perplexity under the prior",
        "perplexity (log scale)",
        "share of documents",
        log_x=True,
    )
    ppl_rows = health.filter(pl.col("metric").str.starts_with("ppl_"))
    overall = {
        f"{r['variant']}/{r['metric']}": round(r["value"], 5)
        for r in _key_rows(health.filter(pl.col("shard") == "__all__")).iter_rows(named=True)
    }
    return dg.MaterializeResult(
        metadata={
            "duckdb": dg.MetadataValue.path(str(s.duckdb_path)),
            "edit_settings": "; ".join(sorted({v for g in range(1, s.generations + 1) for v in versions[text_asset(g)]})),
            "synthetic_settings": "; ".join(versions["synthetic_corpus"]),
            "registered_shards": len(keys),
            REGISTERED: shards_digest(keys),
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
                + "\n\nraw: every scored token, teacher-forced; edited, edited_g2, ...: the prior's scores of that "
                "generation's text (when it was scored: generations > 1); synthetic: the sampled tokens' own log-probs; "
                "raw_matched: the raw tokens at the positions the baseline generated."
            ),
            "overall": dg.MetadataValue.md(overview_markdown(health)),
            "per_shard": dg.MetadataValue.md(_per_shard_table(health)),
        }
        | overall
        | _generations_metadata(health, s.generations)
    )


SHOWN_SHARDS = 50  # rows of the per-shard table in the UI; all shards are in table distribution_health


def _per_shard_table(health: pl.DataFrame) -> str:
    """The key metrics per shard; with many shards, the ones whose edit kept the least of the tail."""
    rows = _key_rows(health.filter(pl.col("shard") != "__all__"))
    shards_seen = rows.get_column("shard").unique()
    note = ""
    if len(shards_seen) > SHOWN_SHARDS:
        worst = (
            rows.filter((pl.col("variant") == "edited") & (pl.col("metric") == "tail_coverage"))
            .sort(["value", "shard"])
            .get_column("shard")
            .head(SHOWN_SHARDS)
        )
        rows = rows.filter(pl.col("shard").is_in(worst.implode()))
        note = (
            f"\n\nThe {SHOWN_SHARDS} of {len(shards_seen)} shards whose edit kept the least of raw's tail; every shard is in "
            "table distribution_health (`SELECT * FROM distribution_health WHERE shard = '...'`)."
        )
    return per_shard_markdown(rows, tuple(m for ms in KEY_METRICS.values() for m in ms)) + note


def _generations_metadata(health: pl.DataFrame, generations: int) -> dict:
    """The whole corpus across generations: a table, and charts of the shares, the perplexity and the tail."""
    if generations < 2:
        return {}
    table = generation_table(health)
    gens = table.get_column("generation").to_list()

    def series(metrics: tuple[str, ...]) -> dict:
        return {
            m: [(g, v) for g, v in zip(gens, table.get_column(m).to_list(), strict=True) if v is not None]
            for m in metrics
            if m in table.columns
        }

    tail = series(("tail_coverage", "js_divergence_vs_raw"))
    # Coverage stays near 1: its loss (1 - tail_coverage, "tail lost") shows on the divergence's scale.
    tail = {
        ("tail lost" if m == "tail_coverage" else m): [(g, 1 - v) if m == "tail_coverage" else (g, v) for g, v in pts]
        for m, pts in tail.items()
    }
    axis = {"xlabel": "generation (0 = raw)", "x_ticks": gens}
    charts = [
        line_chart_svg(
            series(("eligible_share", "changed_share", "deleted_share", "prob_bin_099")),
            "Shares of scored tokens by generation",
            ylabel="share",
            **axis,
        ),
        line_chart_svg(
            series(("ppl_p10", "ppl_p50", "ppl_p90")),
            "Per-document perplexity under the prior by generation",
            ylabel="perplexity",
            log_y=True,
            **axis,
        ),
        line_chart_svg(tail, "Raw's rare bigrams lost, and divergence from raw", ylabel="share / bits", **axis),
    ]
    header = "| generation | variant | " + " | ".join(GENERATION_METRICS) + " |"
    lines = [header, "|---:|---|" + "---:|" * len(GENERATION_METRICS)]
    for row in table.iter_rows(named=True):
        cells = ["" if row.get(m) is None else f"{row[m]:.4f}" for m in GENERATION_METRICS]
        lines.append(f"| {row['generation']} | {row['variant']} | " + " | ".join(cells) + " |")
    note = (
        "Generation g's edit resamples the tokens its prior scores put at P >= p: edited_g{g}'s eligible_share is the "
        "share of such tokens in generation g-1's text (the paper's Table 9 row for generation g), and "
        "prob_bin_099 and the perplexity are those of generation g's own text under the prior."
    )
    return {
        "generations": dg.MetadataValue.md(
            "\n\n".join(svg_markdown(c, "across generations") for c in charts) + "\n\n" + "\n".join(lines) + "\n\n" + note
        ),
        "generation_count": generations,
    }


health_automation = dg.AutomationConditionSensorDefinition(
    "health_automation",
    target=["distribution_health"],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
)
