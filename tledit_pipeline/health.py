"""Distribution-health metrics: does a corpus variant keep the human long tail?

Coverage narrowing and n-gram over-concentration are the two defects of synthetic text the paper
measures; these functions turn n-gram counts and token probabilities into those numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from tledit_pipeline.database import duckdb_connection, search_home, sql_identifier, sql_list, sql_literal, view_path
from tledit_pipeline.errors import TleditError

if TYPE_CHECKING:
    import duckdb

    from tledit_pipeline.storage import Location

PROB_BINS = 10  # the U-shape histogram: [0, 0.1), ..., [0.9, 1.0]
VARIANTS = ("raw", "edited", "synthetic", "raw_matched")  # raw_matched: raw text at the baseline's documents and lengths


def ordered_variants(present) -> list[str]:
    """The variants present, in the order tables and charts show them: raw, edited, edited_g2, ..., synthetic, raw_matched."""
    present = set(present)
    later = sorted((v for v in present if v.startswith("edited_g") and v[8:].isdigit()), key=lambda v: int(v[8:]))
    return [v for v in ("raw", "edited") if v in present] + later + [v for v in VARIANTS[2:] if v in present]


def probability_histogram(logprob: np.ndarray) -> dict[str, float]:
    """Share of scored tokens per probability decile, plus the share at P >= 0.99 (eligible at p = 0.99)."""
    lp = logprob[~np.isnan(logprob)]
    if not len(lp):
        return {}
    p = np.exp(lp.astype(np.float64))
    idx = np.minimum((p * PROB_BINS).astype(int), PROB_BINS - 1)
    hist = np.bincount(idx, minlength=PROB_BINS) / len(p)
    out = {f"prob_bin_{i:02d}": float(h) for i, h in enumerate(hist)}
    out["prob_bin_099"] = float((p >= 0.99).mean())
    return out


def perplexity(logprob: np.ndarray) -> float:
    lp = logprob[~np.isnan(logprob)]
    return float(math.exp(-lp.mean())) if len(lp) else float("nan")


def bar_chart(rows: list[tuple[str, float]], width: int = 40, title: str = "") -> str:
    """A markdown bar chart (renders in the Dagster UI's metadata panel)."""
    top = max((v for _, v in rows), default=0.0) or 1.0
    lines = [f"**{title}**", "", "| bin | share | |", "|---|---:|---|"] if title else ["| bin | share | |", "|---|---:|---|"]
    for label, v in rows:
        lines.append(f"| {label} | {v:.3f} | `{'█' * round(width * v / top)}` |")
    return "\n".join(lines)


def histogram_chart(hist: dict[str, float], title: str = "Token probability under the prior (U-shape)") -> str:
    rows = [(f"[{i / PROB_BINS:.1f}, {(i + 1) / PROB_BINS:.1f})", hist.get(f"prob_bin_{i:02d}", 0.0)) for i in range(PROB_BINS)]
    rows.append(("P >= 0.99", hist.get("prob_bin_099", 0.0)))
    return bar_chart(rows, title=title)


# The n-gram half of the health metrics: needs only the view `ngram_profile` (shard, variant, n, ngram,
# count, bucket). One place for these numbers: distribution_health runs it over the whole lake, the
# ngram_profile asset and its checks over one partition's file. Rare = count <= 2 in that (variant, shard).
_C_SHARDS = "SELECT variant, shard, n, ngram, count::DOUBLE AS count, bucket FROM ngram_profile"
_C_CORPUS = "SELECT variant, '__all__' AS shard, n, ngram, sum(count)::DOUBLE AS count, any_value(bucket) AS bucket FROM ngram_profile GROUP BY variant, n, ngram"
_NGRAM_REST = """
r AS (
    SELECT *, sum(count) OVER w AS total, row_number() OVER (w ORDER BY count DESC, ngram) AS rk
    FROM c WINDOW w AS (PARTITION BY variant, shard, n)
),
ngram_metrics AS (
    SELECT variant, shard, 'distinct_' || n AS metric, count(*) / any_value(total) AS value
    FROM r GROUP BY variant, shard, n
    UNION ALL
    SELECT variant, shard, 'entropy_' || n, -sum(count / total * ln(count / total))
    FROM r GROUP BY variant, shard, n
    UNION ALL
    SELECT variant, shard, 'top64_share', sum(count) FILTER (WHERE rk <= 64) / any_value(total)
    FROM r WHERE n = 2 GROUP BY variant, shard
    UNION ALL
    SELECT variant, shard, 'tail_mass', coalesce(sum(count) FILTER (WHERE count <= 2), 0) / sum(count)
    FROM c WHERE n = 2 GROUP BY variant, shard
),
vs AS (SELECT DISTINCT variant, shard FROM c),
rare AS (SELECT shard, ngram FROM c WHERE variant = 'raw' AND n = 2 AND count <= 2),
rare_n AS (SELECT 'raw' AS variant, shard, 'rare_bigrams' AS metric, count(*) AS value FROM rare GROUP BY shard),
tail AS (
    SELECT vs.variant, vs.shard, 'tail_coverage' AS metric, count(x.ngram) / count(*) AS value
    FROM vs JOIN rare ON rare.shard = vs.shard
    LEFT JOIN c x ON x.variant = vs.variant AND x.shard = vs.shard AND x.n = 2 AND x.ngram = rare.ngram
    GROUP BY vs.variant, vs.shard
),
hp AS (
    SELECT variant, shard, bucket, sum(count) / sum(sum(count)) OVER (PARTITION BY variant, shard) AS p
    FROM c WHERE n <= 2 GROUP BY variant, shard, bucket
),
hashed AS (
    SELECT variant, shard, 'hashed_entropy' AS metric, -sum(p * ln(p)) AS value FROM hp GROUP BY variant, shard
    UNION ALL
    SELECT variant, shard, 'hashed_effective_buckets', exp(-sum(p * ln(p))) FROM hp GROUP BY variant, shard
    UNION ALL  -- the count the JS bound of the health checks is judged on (tledit_pipeline/verdict.py)
    SELECT variant, shard, 'hashed_features', sum(count) FROM c WHERE n <= 2 GROUP BY variant, shard
),
pq AS (
    SELECT vs.variant, vs.shard, coalesce(v.p, 0) AS p, coalesce(w.p, 0) AS q
    FROM vs JOIN (SELECT DISTINCT shard, bucket FROM hp) b ON b.shard = vs.shard
    LEFT JOIN hp v ON v.variant = vs.variant AND v.shard = vs.shard AND v.bucket = b.bucket
    LEFT JOIN hp w ON w.variant = 'raw' AND w.shard = vs.shard AND w.bucket = b.bucket
    WHERE EXISTS (SELECT 1 FROM hp z WHERE z.variant = 'raw' AND z.shard = vs.shard)
),
js AS (  -- Jensen-Shannon divergence in bits (0 = same distribution, 1 = disjoint)
    SELECT variant, shard, 'js_divergence_vs_raw' AS metric, greatest(sum(
        CASE WHEN p > 0 THEN 0.5 * p * log2(2 * p / (p + q)) ELSE 0 END
        + CASE WHEN q > 0 THEN 0.5 * q * log2(2 * q / (p + q)) ELSE 0 END), 0) AS value
    FROM pq WHERE p > 0 OR q > 0 GROUP BY variant, shard
)
"""
# c: the counts the metrics are computed over, per (variant, shard); shard '__all__' is the whole corpus.
_NGRAM_CTES = f"\nc AS ({_C_SHARDS} UNION ALL {_C_CORPUS}),{_NGRAM_REST}"
_NGRAM_UNION = (
    "SELECT * FROM ngram_metrics UNION ALL SELECT * FROM tail UNION ALL SELECT * FROM rare_n"
    " UNION ALL SELECT * FROM hashed UNION ALL SELECT * FROM js"
)

NGRAM_SQL = (
    "WITH"
    + _NGRAM_CTES
    + "SELECT variant, shard, metric, value::DOUBLE AS value FROM ("
    + _NGRAM_UNION
    + ") ORDER BY variant, shard, metric"
)

# The n-gram metrics per shard only, or for the whole corpus only ('__all__'): what the edit sweep
# (tledit_pipeline/sweep.py) computes for each of its points against raw's stored counts.
SHARD_NGRAM_SQL = (
    "WITH"
    + f"\nc AS ({_C_SHARDS}),{_NGRAM_REST}"
    + "SELECT variant, shard, metric, value::DOUBLE AS value FROM ("
    + _NGRAM_UNION
    + ") ORDER BY variant, shard, metric"
)
CORPUS_NGRAM_SQL = (
    "WITH"
    + f"\nc AS ({_C_CORPUS}),{_NGRAM_REST}"
    + "SELECT variant, shard, metric, value::DOUBLE AS value FROM ("
    + _NGRAM_UNION
    + ") ORDER BY variant, shard, metric"
)

# Per-document perplexity under the prior. raw: teacher-forced scores of every scored token; edited
# variants: the prior's scores of that generation's text (generation_scores, when it was scored);
# synthetic: the log-probs recorded while sampling; raw_matched: the raw tokens at the positions the
# baseline generated (same documents, same prefixes, same lengths; one range per piece).
_PPL_CTES = """
gen_ranges AS (
    SELECT shard, doc_id, p.start + p.prefix AS lo, p.start + p.prefix + p.new AS hi
    FROM (SELECT shard, doc_id, unnest(pieces) AS p FROM synthetic_corpus WHERE new_tokens > 0)
),
ppl AS (
    SELECT 'raw' AS variant, shard, exp(-avg(logprob)) AS ppl
    FROM token_scores WHERE logprob IS NOT NULL GROUP BY shard, doc_id
    UNION ALL
    SELECT variant, shard, exp(-avg(logprob))
    FROM generation_scores WHERE logprob IS NOT NULL GROUP BY variant, shard, doc_id
    UNION ALL
    SELECT 'synthetic', shard, exp(-list_avg(logprobs)) FROM synthetic_corpus WHERE new_tokens > 0
    UNION ALL
    SELECT 'raw_matched', t.shard, exp(-avg(t.logprob))
    FROM token_scores t JOIN gen_ranges s ON s.shard = t.shard AND s.doc_id = t.doc_id
    WHERE t.pos >= s.lo AND t.pos < s.hi
    GROUP BY t.shard, t.doc_id
)
"""
PPL_SQL = "WITH" + _PPL_CTES + "SELECT variant, shard, ppl FROM ppl ORDER BY variant, shard, ppl"

_OTHER_CTES = (
    """
lp AS (
    SELECT 'raw' AS variant, shard, logprob AS lp FROM token_scores WHERE logprob IS NOT NULL
    UNION ALL
    SELECT variant, shard, logprob FROM generation_scores WHERE logprob IS NOT NULL
    UNION ALL
    SELECT 'synthetic', shard, unnest(logprobs) FROM synthetic_corpus
),
pb AS (
    SELECT variant, shard, least(floor(exp(lp) * 10), 9)::BIGINT AS bin, count(*) AS k,
           count(*) FILTER (WHERE exp(lp) >= 0.99) AS top
    FROM lp GROUP BY ALL
),
pb_all AS (
    SELECT variant, shard, bin, k, top FROM pb
    UNION ALL SELECT variant, '__all__', bin, sum(k), sum(top) FROM pb GROUP BY variant, bin
),
pgrid AS (SELECT s.variant, s.shard, r.bin FROM (SELECT DISTINCT variant, shard FROM pb_all) s CROSS JOIN range(10) r(bin)),
prob_metrics AS (
    SELECT g.variant, g.shard, printf('prob_bin_%02d', g.bin) AS metric,
           coalesce(b.k, 0) / sum(coalesce(b.k, 0)) OVER (PARTITION BY g.variant, g.shard) AS value
    FROM pgrid g LEFT JOIN pb_all b ON b.variant = g.variant AND b.shard = g.shard AND b.bin = g.bin
    UNION ALL
    SELECT variant, shard, 'prob_bin_099', sum(top) / sum(k) FROM pb_all GROUP BY variant, shard
),"""
    + _PPL_CTES
    + """,
ppl_all AS (SELECT variant, shard, ppl FROM ppl UNION ALL SELECT variant, '__all__', ppl FROM ppl),
ppl_metrics AS (
    SELECT variant, shard, unnest(['ppl_p10', 'ppl_p50', 'ppl_p90']) AS metric,
           unnest(quantile_cont(ppl, [0.1, 0.5, 0.9])) AS value
    FROM ppl_all GROUP BY variant, shard
),
e AS (SELECT variant, shard, n_scored, n_eligible, n_changed, n_deleted FROM edited_generations),
e_all AS (SELECT * FROM e UNION ALL SELECT variant, '__all__', n_scored, n_eligible, n_changed, n_deleted FROM e),
edit_metrics AS (
    SELECT variant, shard, 'eligible_share' AS metric,
           sum(n_eligible) / greatest(sum(n_scored), 1) AS value FROM e_all GROUP BY variant, shard
    UNION ALL
    SELECT variant, shard, 'changed_share', sum(n_changed) / greatest(sum(n_scored), 1) FROM e_all GROUP BY variant, shard
    UNION ALL
    SELECT variant, shard, 'deleted_share', sum(n_deleted) / greatest(sum(n_scored), 1) FROM e_all GROUP BY variant, shard
)
"""
)

# Long-format metrics over the lake's DuckDB views, per (variant, shard) and for shard '__all__'.
HEALTH_SQL = (
    "WITH"
    + _NGRAM_CTES
    + ","
    + _OTHER_CTES
    + "SELECT variant, shard, metric, value::DOUBLE AS value FROM ("
    + _NGRAM_UNION
    + " UNION ALL SELECT * FROM prob_metrics UNION ALL SELECT * FROM ppl_metrics UNION ALL SELECT * FROM edit_metrics"
    + ") ORDER BY variant, shard, metric"
)

HEALTH_VIEWS = ("ngram_profile", "token_scores", "edited_corpus", "synthetic_corpus")

# Incremental health. A shard's rows depend on that shard alone, so they are computed once, when the
# shard's diagnostics are built, and stored in the lake (shard_health: the shard's rows of the table;
# document_perplexity: its documents' perplexities). The whole-corpus '__all__' rows are then built from
# those stored rows and the n-gram counts, so a changed shard never recomputes the other shards' metrics.
# scored_tokens (the tokens behind the probability shares) and edit_scored_tokens (behind the edit shares)
# turn the stored shares back into exact counts.
_SCORED_CTE = """,
scored AS (
    SELECT 'raw' AS variant, shard, 'scored_tokens' AS metric, count(*)::DOUBLE AS value
    FROM token_scores WHERE logprob IS NOT NULL GROUP BY shard
    UNION ALL
    SELECT variant, shard, 'scored_tokens', count(*)::DOUBLE FROM generation_scores WHERE logprob IS NOT NULL GROUP BY variant, shard
    UNION ALL
    SELECT 'synthetic', shard, 'scored_tokens', sum(len(logprobs))::DOUBLE FROM synthetic_corpus GROUP BY shard
    UNION ALL
    SELECT variant, shard, 'edit_scored_tokens', sum(n_scored)::DOUBLE FROM edited_generations GROUP BY variant, shard
)
"""
SHARD_HEALTH_SQL = (
    "WITH"
    + f"\nc AS ({_C_SHARDS}),{_NGRAM_REST}"
    + ","
    + _OTHER_CTES
    + _SCORED_CTE
    + "SELECT variant, shard, metric, value::DOUBLE AS value FROM ("
    + _NGRAM_UNION
    + " UNION ALL SELECT * FROM prob_metrics UNION ALL SELECT * FROM ppl_metrics UNION ALL SELECT * FROM edit_metrics"
    + " UNION ALL SELECT * FROM scored) WHERE shard <> '__all__' ORDER BY variant, shard, metric"
)

# The '__all__' rows from views ngram_profile, shard_health and document_perplexity (all shards).
_CORPUS_CTES = """,
counted AS (
    SELECT h.variant, h.metric, round(h.value * t.value) AS k, t.value AS n
    FROM shard_health h JOIN shard_health t ON t.variant = h.variant AND t.shard = h.shard
         AND t.metric = CASE WHEN h.metric LIKE 'prob_bin_%' THEN 'scored_tokens' ELSE 'edit_scored_tokens' END
    WHERE h.metric LIKE 'prob_bin_%' OR h.metric IN ('eligible_share', 'changed_share', 'deleted_share')
),
share_metrics AS (
    SELECT variant, '__all__' AS shard, metric, sum(k) / greatest(sum(n), 1) AS value FROM counted GROUP BY variant, metric
    UNION ALL
    SELECT variant, '__all__', metric, sum(value) FROM shard_health
    WHERE metric IN ('scored_tokens', 'edit_scored_tokens') GROUP BY variant, metric
),
corpus_ppl AS (
    SELECT variant, '__all__' AS shard, unnest(['ppl_p10', 'ppl_p50', 'ppl_p90']) AS metric,
           unnest(quantile_cont(ppl, [0.1, 0.5, 0.9])) AS value
    FROM document_perplexity GROUP BY variant
)
"""
_CORPUS_WITH = "WITH" + f"\nc AS ({_C_CORPUS}),{_NGRAM_REST}" + _CORPUS_CTES
_CORPUS_UNION = _NGRAM_UNION + " UNION ALL SELECT * FROM share_metrics UNION ALL SELECT * FROM corpus_ppl"
CORPUS_HEALTH_SQL = _CORPUS_WITH + "SELECT variant, shard, metric, value::DOUBLE AS value FROM (" + _CORPUS_UNION + ")"
HEALTH_FROM_SHARDS_SQL = (
    _CORPUS_WITH
    + "SELECT variant, shard, metric, value::DOUBLE AS value FROM ("
    + _CORPUS_UNION
    + " UNION ALL SELECT variant, shard, metric, value FROM shard_health) ORDER BY variant, shard, metric"
)
SHARD_TABLES = ("shard_health", "document_perplexity")  # lake tables the diagnostics step writes per shard

# Every generation of the edited corpus (variant edited, edited_g2, ...) and the prior's scores of each
# one's text (generation_scores). generations.refresh_generation_views makes them over the lake; where a
# connection lacks them, these defaults stand for one generation whose text was not scored.
EDITED_GENERATIONS_DDL = "CREATE VIEW edited_generations AS SELECT 'edited' AS variant, * FROM edited_corpus"
GENERATION_SCORES_DDL = (
    "CREATE VIEW generation_scores AS SELECT NULL::VARCHAR AS variant, NULL::VARCHAR AS shard, "
    "NULL::VARCHAR AS doc_id, NULL::INTEGER AS pos, NULL::FLOAT AS logprob WHERE false"
)

# Log-spaced ranks for the rank-frequency chart (about 20 points per decade are plenty).
RANK_FREQUENCY_SQL = """
SELECT variant, rk AS rank, freq FROM (
    SELECT variant, row_number() OVER (PARTITION BY variant ORDER BY sum(count) DESC, ngram) AS rk,
           sum(count) / sum(sum(count)) OVER (PARTITION BY variant) AS freq,
           count(*) OVER (PARTITION BY variant) AS distinct_n
    FROM ngram_profile WHERE n = $n GROUP BY variant, ngram
) WHERE rk IN (SELECT DISTINCT round(pow(10, i / 20.0))::BIGINT FROM range(0, 161) t(i)) OR rk = distinct_n
ORDER BY variant, rank
"""


def _threads(con: "duckdb.DuckDBPyConnection") -> Any:
    """DuckDB's thread setting, to restore after a one-thread (bit-exact) build."""
    row = con.execute("SELECT current_setting('threads')").fetchone()
    assert row is not None
    return row[0]


def _frame(result: "duckdb.DuckDBPyConnection") -> pl.DataFrame:
    frame = pl.from_arrow(result.to_arrow_table())
    assert isinstance(frame, pl.DataFrame)  # a table, never a single column
    return frame


def ngram_health(con: "duckdb.DuckDBPyConnection") -> pl.DataFrame:
    """The n-gram metrics (variant, shard, metric, value) over the connection's `ngram_profile` view."""
    return _frame(con.execute(NGRAM_SQL))


def profile_health(path: Path) -> pl.DataFrame:
    """n-gram metrics of one ngram_profile parquet file (one shard): the same SQL, in memory."""
    with duckdb_connection(":memory:", path) as con:  # a lake on an object store is read through its filesystem
        con.execute(f"CREATE VIEW ngram_profile AS SELECT * FROM read_parquet({sql_literal(str(path))})")
        return ngram_health(con).filter(pl.col("shard") != "__all__")


def build_health_table(con: "duckdb.DuckDBPyConnection") -> pl.DataFrame:
    """Create or replace table distribution_health(variant, shard, metric, value) and return it."""
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    missing = [v for v in HEALTH_VIEWS if v not in views]
    if missing:
        raise TleditError(f"distribution_health needs {', '.join(missing)} for at least one shard; materialize them first")
    _default_generation_views(con)
    # One thread: float sums in a fixed order, so the same lake gives the same table to the last bit
    # (parallel aggregation adds in whatever order the threads finish). The inputs are small aggregates.
    threads = _threads(con)
    con.execute("SET threads = 1")
    try:
        con.execute("CREATE OR REPLACE TABLE distribution_health AS " + HEALTH_SQL)
    finally:
        con.execute("SET threads = $t", {"t": threads})
    return _frame(con.execute("SELECT * FROM distribution_health ORDER BY variant, shard, metric"))


def create_views(con: "duckdb.DuckDBPyConnection", home: Location, files: Mapping[str, Sequence[Location]]) -> None:
    """One view per name over exactly the given parquet files of `home`'s lake (its own, fixed-schema tables)."""
    search_home(con, home)
    for view, paths in files.items():
        con.execute(
            f"CREATE OR REPLACE VIEW {sql_identifier(view)} AS SELECT * FROM read_parquet("
            f"{sql_list([view_path(home, p) for p in paths])}, hive_partitioning = false, union_by_name = true)"
        )


@contextmanager
def _one_thread(con: "duckdb.DuckDBPyConnection") -> Iterator[None]:
    """Float sums in a fixed order: the same lake gives the same table to the last bit."""
    threads = _threads(con)
    con.execute("SET threads = 1")
    try:
        yield
    finally:
        con.execute("SET threads = $t", {"t": threads})


def _default_generation_views(con: "duckdb.DuckDBPyConnection") -> None:
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    if "edited_generations" not in views:
        con.execute(EDITED_GENERATIONS_DDL)
    if "generation_scores" not in views:
        con.execute(GENERATION_SCORES_DDL)


def shard_health_rows(con: "duckdb.DuckDBPyConnection") -> pl.DataFrame:
    """Each shard's rows of distribution_health (no '__all__'), plus its token counts, over HEALTH_VIEWS
    (and edited_generations, generation_scores where there are later generations).

    A shard's rows depend on its own data only: computing many shards at once gives each the same rows.
    """
    _default_generation_views(con)
    with _one_thread(con):
        return _frame(con.execute(SHARD_HEALTH_SQL))


def build_health_table_from_shards(con: "duckdb.DuckDBPyConnection") -> pl.DataFrame:
    """Create or replace table distribution_health from the stored per-shard rows (views shard_health,
    document_perplexity) and the n-gram counts (view ngram_profile): only the '__all__' rows are computed.
    Same rows as build_health_table over the same lake, plus the token counts."""
    with _one_thread(con):
        con.execute("CREATE OR REPLACE TABLE distribution_health AS " + HEALTH_FROM_SHARDS_SQL)
    return _frame(con.execute("SELECT * FROM distribution_health ORDER BY variant, shard, metric"))


def rank_frequency(con: "duckdb.DuckDBPyConnection", n: int = 1) -> pl.DataFrame:
    """(variant, rank, freq) at log-spaced ranks over the whole corpus: the Zipf curve of each variant."""
    return _frame(con.execute(RANK_FREQUENCY_SQL, {"n": n}))


def document_perplexities(con: "duckdb.DuckDBPyConnection") -> pl.DataFrame:
    """(variant, shard, ppl) per document; without later generations' scores, generation_scores is empty."""
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    if "generation_scores" not in views:
        con.execute(GENERATION_SCORES_DDL)
    return _frame(con.execute(PPL_SQL))


def overview_markdown(health: pl.DataFrame, shard: str = "__all__") -> str:
    """Variants side by side for one shard: the table a person scans first."""
    wide = health.filter(pl.col("shard") == shard).pivot(on="variant", index="metric", values="value").sort("metric")
    cols = ordered_variants(wide.columns)
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for row in wide.iter_rows(named=True):
        cells = ["" if row[c] is None else f"{row[c]:.4f}" for c in cols]
        lines.append(f"| {row['metric']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_shard_markdown(health: pl.DataFrame, metrics: tuple[str, ...]) -> str:
    rows = health.filter(pl.col("metric").is_in(list(metrics)))
    wide = (
        rows.with_columns((pl.col("variant") + ":" + pl.col("metric")).alias("col"))
        .pivot(on="col", index="shard", values="value")
        .sort("shard")
    )
    cols = [c for c in wide.columns if c != "shard"]
    lines = ["| shard | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for row in wide.iter_rows(named=True):
        lines.append(f"| {row['shard']} | " + " | ".join("" if row[c] is None else f"{row[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines)


def histograms_markdown(health: pl.DataFrame, shard: str = "__all__", width: int = 30) -> str:
    """Token-probability histograms side by side (raw: teacher-forced; synthetic: the sampled tokens)."""
    rows = health.filter((pl.col("shard") == shard) & pl.col("metric").str.starts_with("prob_bin_"))
    variants = ordered_variants(rows.get_column("variant").to_list())
    value = {(r["variant"], r["metric"]): r["value"] for r in rows.iter_rows(named=True)}
    top = max((v for (_, m), v in value.items() if m != "prob_bin_099"), default=0.0) or 1.0
    lines = [
        "**Token probability under the prior (the U-shape)**",
        "",
        "| P bin | " + " | ".join(variants) + " | " + " | ".join(f"{v} bar" for v in variants) + " |",
        "|---|" + "---:|" * len(variants) + "---|" * len(variants),
    ]
    labels = [(f"prob_bin_{i:02d}", f"[{i / PROB_BINS:.1f}, {(i + 1) / PROB_BINS:.1f})") for i in range(PROB_BINS)]
    for metric, label in labels + [("prob_bin_099", "P >= 0.99")]:
        vals = [value.get((v, metric), 0.0) for v in variants]
        bars = [f"`{'█' * round(width * x / top)}`" for x in vals]
        lines.append(f"| {label} | " + " | ".join(f"{x:.3f}" for x in vals) + " | " + " | ".join(bars) + " |")
    return "\n".join(lines)


def perplexity_polygons(ppl: pl.DataFrame, bins: int = 24) -> dict[str, list[tuple[float, float]]]:
    """Share of documents per log-spaced perplexity bin, per variant (bin centres): the spread at a glance."""
    vals = ppl.filter(pl.col("ppl").is_finite() & (pl.col("ppl") > 0))
    if not vals.height:
        return {}
    lo, hi = math.log10(float(vals["ppl"].min())), math.log10(float(vals["ppl"].max()))  # type: ignore[arg-type]
    hi = hi if hi > lo else lo + 1
    edges = np.linspace(lo, hi, bins + 1)
    centres = 10 ** ((edges[:-1] + edges[1:]) / 2)
    out = {}
    for v in ordered_variants(vals.get_column("variant").to_list()):
        x = np.log10(vals.filter(pl.col("variant") == v)["ppl"].to_numpy())
        if len(x):
            h, _ = np.histogram(x, bins=edges)
            out[v] = list(zip(centres.tolist(), (h / len(x)).tolist(), strict=True))
    return out


# What the UI and `tledit health` show per generation (the issue's list, Table 9's share among them).
GENERATION_METRICS = (
    "eligible_share",
    "changed_share",
    "deleted_share",
    "prob_bin_099",
    "tail_coverage",
    "js_divergence_vs_raw",
    "ppl_p10",
    "ppl_p50",
    "ppl_p90",
)


def generation_of_variant(name: str) -> int | None:
    """raw -> 0, edited -> 1, edited_g{g} -> g; None for the synthetic variants."""
    if name == "raw":
        return 0
    if name == "edited":
        return 1
    if name.startswith("edited_g") and name[8:].isdigit():
        return int(name[8:])
    return None


def generation_table(health: pl.DataFrame, shard: str = "__all__") -> pl.DataFrame:
    """One row per generation (0 = raw), GENERATION_METRICS as columns: the corpus across generations."""
    rows = health.filter((pl.col("shard") == shard) & pl.col("metric").is_in(list(GENERATION_METRICS)))
    rows = rows.with_columns(
        pl.col("variant").map_elements(generation_of_variant, return_dtype=pl.Int64).alias("generation")
    ).filter(pl.col("generation").is_not_null())
    wide = rows.pivot(on="metric", index=["generation", "variant"], values="value").sort("generation")
    return wide.select(["generation", "variant"] + [m for m in GENERATION_METRICS if m in wide.columns])
