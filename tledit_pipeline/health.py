"""Distribution-health metrics: does a corpus variant keep the human long tail?

Coverage narrowing and n-gram over-concentration are the two defects of synthetic text the paper
measures; these functions turn n-gram counts and token probabilities into those numbers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from tledit_pipeline.errors import TleditError

if TYPE_CHECKING:
    import duckdb

PROB_BINS = 10  # the U-shape histogram: [0, 0.1), ..., [0.9, 1.0]
TOP_K_SHARE = (40, 64)


def concentration(counts: pl.DataFrame) -> dict[str, float]:
    """Per n: distinct-n ratio, Shannon entropy (nats), and the mass share of the k most frequent n-grams."""
    out: dict[str, float] = {}
    for n in sorted(counts.get_column("n").unique().to_list()):
        c = counts.filter(pl.col("n") == n).get_column("count").sort(descending=True).to_numpy().astype(np.float64)
        total = c.sum()
        if total == 0:
            continue
        p = c / total
        out[f"distinct_{n}"] = float(len(c) / total)
        out[f"entropy_{n}"] = float(-(p * np.log(p)).sum())
        for k in TOP_K_SHARE:
            out[f"top{k}_share_{n}"] = float(c[:k].sum() / total)
    return out


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


# Long-format metrics over the lake's DuckDB views, per (variant, shard) and for shard '__all__'.
HEALTH_SQL = """
WITH c AS (
    SELECT variant, shard, n, ngram, count::DOUBLE AS count FROM ngram_profile
    UNION ALL
    SELECT variant, '__all__', n, ngram, sum(count)::DOUBLE FROM ngram_profile GROUP BY variant, n, ngram
),
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
),
pb AS (
    SELECT shard, least(floor(exp(logprob) * 10), 9)::BIGINT AS bin, count(*) AS k,
           count(*) FILTER (WHERE exp(logprob) >= 0.99) AS top
    FROM token_scores WHERE logprob IS NOT NULL GROUP BY ALL
),
pb_all AS (SELECT shard, bin, k, top FROM pb UNION ALL SELECT '__all__', bin, sum(k), sum(top) FROM pb GROUP BY bin),
grid AS (SELECT s.shard, r.bin FROM (SELECT DISTINCT shard FROM pb_all) s CROSS JOIN range(10) r(bin)),
prob_metrics AS (
    SELECT 'raw' AS variant, g.shard, printf('prob_bin_%02d', g.bin) AS metric,
           coalesce(b.k, 0) / sum(coalesce(b.k, 0)) OVER (PARTITION BY g.shard) AS value
    FROM grid g LEFT JOIN pb_all b ON b.shard = g.shard AND b.bin = g.bin
    UNION ALL
    SELECT 'raw', shard, 'prob_bin_099', sum(top) / sum(k) FROM pb_all GROUP BY shard
),
ppl AS (
    SELECT shard, exp(-avg(logprob)) AS ppl FROM token_scores WHERE logprob IS NOT NULL GROUP BY shard, doc_id
),
ppl_all AS (SELECT shard, ppl FROM ppl UNION ALL SELECT '__all__', ppl FROM ppl),
ppl_metrics AS (
    SELECT 'raw' AS variant, shard, unnest(['ppl_p10', 'ppl_p50', 'ppl_p90']) AS metric,
           unnest(quantile_cont(ppl, [0.1, 0.5, 0.9])) AS value
    FROM ppl_all GROUP BY shard
),
e AS (SELECT shard, n_tokens, n_eligible, n_changed FROM edited_corpus),
e_all AS (SELECT * FROM e UNION ALL SELECT '__all__', n_tokens, n_eligible, n_changed FROM e),
edit_metrics AS (
    SELECT 'edited' AS variant, shard, 'eligible_share' AS metric,
           sum(n_eligible) / greatest(sum(n_tokens - 1), 1) AS value FROM e_all GROUP BY shard
    UNION ALL
    SELECT 'edited', shard, 'changed_share', sum(n_changed) / greatest(sum(n_tokens - 1), 1) FROM e_all GROUP BY shard
)
SELECT variant, shard, metric, value::DOUBLE AS value FROM (
    SELECT * FROM ngram_metrics UNION ALL SELECT * FROM prob_metrics
    UNION ALL SELECT * FROM ppl_metrics UNION ALL SELECT * FROM edit_metrics
)
ORDER BY variant, shard, metric
"""


HEALTH_VIEWS = ("ngram_profile", "token_scores", "edited_corpus")


def build_health_table(con: "duckdb.DuckDBPyConnection") -> pl.DataFrame:
    """Create or replace table distribution_health(variant, shard, metric, value) and return it."""
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    missing = [v for v in HEALTH_VIEWS if v not in views]
    if missing:
        raise TleditError(f"distribution_health needs {', '.join(missing)} for at least one shard; materialize them first")
    con.execute("CREATE OR REPLACE TABLE distribution_health AS " + HEALTH_SQL)
    return pl.from_arrow(con.execute("SELECT * FROM distribution_health ORDER BY variant, shard, metric").to_arrow_table())


def overview_markdown(health: pl.DataFrame, shard: str = "__all__") -> str:
    """Variants side by side for one shard: the table a person scans first."""
    wide = (
        health.filter(pl.col("shard") == shard)
        .pivot(on="variant", index="metric", values="value")
        .sort("metric")
    )
    cols = [c for c in ("raw", "edited", "synthetic") if c in wide.columns]
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for row in wide.iter_rows(named=True):
        cells = ["" if row[c] is None else f"{row[c]:.4f}" for c in cols]
        lines.append(f"| {row['metric']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_shard_markdown(health: pl.DataFrame, metrics: tuple[str, ...]) -> str:
    rows = health.filter(pl.col("metric").is_in(list(metrics)))
    wide = rows.with_columns((pl.col("variant") + ":" + pl.col("metric")).alias("col")).pivot(
        on="col", index="shard", values="value"
    ).sort("shard")
    cols = [c for c in wide.columns if c != "shard"]
    lines = ["| shard | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for row in wide.iter_rows(named=True):
        lines.append(f"| {row['shard']} | " + " | ".join("" if row[c] is None else f"{row[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines)
