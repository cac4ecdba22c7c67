"""The edit sweep: one corpus edited at several settings from its stored scores, each point measured.

A user's first question is how hard the corpus can be edited before it costs the long tail. A sweep point
is one EditSettings (threshold p and, where swept, top-p, exclude-original, deletion q). Its edit is the
pure function of the stored token_scores that edited_corpus runs (edited.edit_from_lake), so a sweep never
loads the prior. Each point's edited text is profiled with the same n-gram code (ngrams.profile) and
measured with the same SQL as distribution_health (health.SHARD_NGRAM_SQL per shard,
health.CORPUS_NGRAM_SQL for the whole corpus), against raw's counts stored by ngram_profile.

A point's key names its settings in full (point_key, point_settings), so a point is a variant of its own
whose name is its lineage: `p0_9-k8-b1_5-s0` is p = 0.9, k = 8, beta = 1.5, seed 0, top-k sampling.

Lake tables: sweep_edited and sweep_ngrams (one file per point and shard: the text and its n-gram
counts), sweep_health (that pair's rows), edit_sweep (every point's rows, per shard and '__all__').
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import polars as pl

from tledit_pipeline.charts import line_chart_svg
from tledit_pipeline.database import duckdb_connection
from tledit_pipeline.edited import edit_from_lake
from tledit_pipeline.errors import TleditError
from tledit_pipeline.health import CORPUS_NGRAM_SQL, SHARD_NGRAM_SQL, create_views
from tledit_pipeline.lake import partition_file, partition_meta, read_partition, write_partition
from tledit_pipeline.ngrams import profile
from tledit_pipeline.settings import CheckSettings, EditSettings, SettingsError
from tledit_pipeline.storage import Location
from tledit_pipeline.verdict import health_verdict

SWEEP_EDITED = "sweep_edited"
SWEEP_NGRAMS = "sweep_ngrams"
SWEEP_HEALTH = "sweep_health"
SWEEP_TABLE = "edit_sweep"
SWEEP_KEY = "all"  # the one lake file of the whole sweep's table
RAW = "raw"  # the table's reference row: nothing edited

# The table's columns: the edit's shares, then what it costs the tail, the closeness and the concentration.
SWEEP_METRICS = (
    "eligible_share",
    "changed_share",
    "deleted_share",
    "tail_coverage",
    "js_divergence_vs_raw",
    "top64_share",
    "distinct_2",
    "entropy_2",
)
COUNTS = ("documents", "scored_tokens", "eligible_tokens", "changed_tokens", "deleted_tokens")


class SweepError(TleditError):
    """A sweep point or its inputs cannot be used; the message names the point, shard or setting."""


# --- points: settings <-> key ------------------------------------------------------------------------------


def _num(x: float) -> str:
    """A float in a partition key: repr with '.' as '_' and '-' as 'm' (0.95 -> 0_95, 1e-05 -> 1em05)."""
    return repr(float(x)).replace(".", "_").replace("-", "m").replace("+", "")


def _parse_num(s: str) -> float:
    return float(s.replace("m", "-").replace("_", "."))


def point_key(e: EditSettings) -> str:
    """The point's partition key: every setting that changes the edit, so the key is its full description."""
    parts = [f"p{_num(e.threshold)}", f"k{e.top_k}", f"b{_num(e.beta)}", f"s{e.seed}"]
    if e.strategy == "top_p":
        parts.append(f"topp{_num(e.top_p)}")
    if e.exclude_original:
        parts.append("excl")
    if e.drop_below > 0:
        parts.append(f"q{_num(e.drop_below)}")
    return "-".join(parts)


def point_settings(key: str) -> EditSettings:
    """The EditSettings a point key names (the inverse of point_key); a clear error for any other string."""
    fields: dict[str, Any] = {}
    try:
        for part in key.split("-"):
            if part.startswith("topp"):
                fields.update(strategy="top_p", top_p=_parse_num(part[4:]))
            elif part == "excl":
                fields["exclude_original"] = True
            elif part[:1] == "p":
                fields["threshold"] = _parse_num(part[1:])
            elif part[:1] == "k":
                fields["top_k"] = int(part[1:])
            elif part[:1] == "b":
                fields["beta"] = _parse_num(part[1:])
            elif part[:1] == "s":
                fields["seed"] = int(part[1:])
            elif part[:1] == "q":
                fields["drop_below"] = _parse_num(part[1:])
            else:
                raise ValueError(part)
        settings = EditSettings(**fields)
    except (ValueError, SettingsError) as exc:
        raise SweepError(f"sweep point {key!r} does not name edit settings ({exc})") from None
    if point_key(settings) != key:
        raise SweepError(f"sweep point {key!r} is not in canonical form (expected {point_key(settings)!r})")
    return settings


def sweep_grid(
    base: EditSettings,
    thresholds: Sequence[float],
    top_ps: Sequence[float] = (),
    drop_belows: Sequence[float] = (),
    exclude_original: Sequence[bool] = (),
) -> list[EditSettings]:
    """Every combination of the swept values over `base` (the run's edit settings), thresholds descending
    (the weakest edit first), without repeats. An empty list leaves that knob at base's value."""
    if not thresholds:
        raise SweepError("a sweep needs at least one threshold (--thresholds 0.5,0.9,0.99)")
    out: list[EditSettings] = []
    tps: list[float | None] = list(top_ps) or [None]
    qs: list[float | None] = list(drop_belows) or [None]
    exs: list[bool | None] = list(exclude_original) or [None]
    for t in sorted(set(thresholds), reverse=True):
        for tp in tps:
            for q in qs:
                for ex in exs:
                    changes: dict[str, Any] = {"threshold": t}
                    if tp is not None:
                        changes.update(strategy="top_p", top_p=tp)
                    if q is not None:
                        changes["drop_below"] = q
                    if ex is not None:
                        changes["exclude_original"] = ex
                    try:
                        point = replace(base, **changes)
                    except SettingsError as exc:
                        raise SweepError(f"sweep point {changes}: {exc}") from None
                    if point not in out:
                        out.append(point)
    return out


def pair_key(point: str, shard: str) -> str:
    """The lake key of one point's shard (a point key never holds '--')."""
    return f"{point}--{shard}"


# --- one point, one shard ------------------------------------------------------------------------------------


def sweep_shard(home: Location, point: str, shard: str) -> pl.DataFrame:
    """Edit one shard at one point from its stored scores, store the text, its n-gram counts and its rows
    (point, shard, metric, value): the same n-gram metrics as distribution_health against raw's stored
    counts of the shard, the edit's shares, and the counts behind them. Never loads the prior."""
    e = point_settings(point)
    raw_profile = partition_file(home, "ngram_profile", shard)
    if not raw_profile.exists():
        raise SweepError(f"shard {shard!r} has no ngram_profile (raw's n-gram counts); run `tledit run` first")
    table, stats = edit_from_lake(home, shard, e)  # type: ignore[arg-type]  # a Location, as every lake read
    key = pair_key(point, shard)
    meta = {"edit": e.version(), "point": point, "shard": shard}
    write_partition(home, SWEEP_EDITED, key, table, meta=meta)
    counts = profile(shard, {point: table.column("text").to_pylist()})
    write_partition(home, SWEEP_NGRAMS, key, counts.to_arrow(), meta=meta)
    with duckdb_connection(":memory:", home) as con:
        create_views(con, home, {"stored_profile": [raw_profile]})
        con.register("point_profile", counts.to_arrow())
        con.execute(
            "CREATE VIEW ngram_profile AS SELECT * FROM stored_profile WHERE variant = 'raw' "
            "UNION ALL SELECT * FROM point_profile"
        )
        ngram = _frame(con.execute(SHARD_NGRAM_SQL))
    rows = ngram.filter(pl.col("variant") == point).drop("variant")
    extra = {
        "eligible_share": stats.eligible_share,
        "changed_share": stats.changed_share,
        "deleted_share": stats.deleted_share,
        "documents": stats.documents,
        "scored_tokens": stats.scored,
        "eligible_tokens": stats.eligible,
        "changed_tokens": stats.changed,
        "deleted_tokens": stats.deleted,
    }
    rows = pl.concat(
        [rows, pl.DataFrame({"shard": [shard] * len(extra), "metric": list(extra), "value": [float(v) for v in extra.values()]})]
    )
    rows = rows.select(pl.lit(point).alias("point"), "shard", "metric", pl.col("value").cast(pl.Float64)).sort("metric")
    write_partition(home, SWEEP_HEALTH, key, rows.to_arrow(), meta=meta)
    return rows


def _frame(result) -> pl.DataFrame:
    return _table(result.to_arrow_table())


def _table(table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)  # a table, never a single column
    return frame


# --- the whole sweep -----------------------------------------------------------------------------------------


def build_sweep(home: Location, points: Sequence[str], shards: Sequence[str]) -> pl.DataFrame:
    """Rows (point, shard, metric, value) of every point: each shard's stored rows, the whole corpus's
    ('__all__': n-gram metrics over all shards' counts, shares from the summed counts), and raw's own
    n-gram rows as point 'raw'. Reads the lake only."""
    missing = [pair_key(p, s) for p in points for s in shards if not partition_file(home, SWEEP_HEALTH, pair_key(p, s)).exists()]
    if missing:
        raise SweepError(f"{len(missing)} sweep partition(s) not materialized, e.g. {missing[0]}; run `tledit sweep` first")
    per_shard = pl.concat([_table(read_partition(home, SWEEP_HEALTH, pair_key(p, s))) for p in points for s in shards])
    with duckdb_connection(":memory:", home) as con:
        create_views(
            con,
            home,
            {
                "stored_profile": [partition_file(home, "ngram_profile", s) for s in shards],
                "point_profiles": [partition_file(home, SWEEP_NGRAMS, pair_key(p, s)) for p in points for s in shards],
            },
        )
        con.execute(
            "CREATE VIEW ngram_profile AS SELECT * FROM stored_profile WHERE variant = 'raw' "
            "UNION ALL SELECT * FROM point_profiles"
        )
        con.execute("SET threads = 1")  # float sums in a fixed order: the same lake gives the same table
        corpus = _frame(con.execute(CORPUS_NGRAM_SQL)).rename({"variant": "point"})
    counts = per_shard.filter(pl.col("metric").is_in(list(COUNTS))).group_by("point", "metric").agg(pl.col("value").sum())
    c = {(r["point"], r["metric"]): r["value"] for r in counts.iter_rows(named=True)}
    shares = []
    for p in points:
        scored = max(c.get((p, "scored_tokens"), 0.0), 1.0)
        for m in COUNTS:
            shares.append((p, m, c.get((p, m), 0.0)))
        for share, n in (("eligible_share", "eligible"), ("changed_share", "changed"), ("deleted_share", "deleted")):
            shares.append((p, share, c.get((p, f"{n}_tokens"), 0.0) / scored))
    whole = pl.DataFrame(shares, schema={"point": pl.String, "metric": pl.String, "value": pl.Float64}, orient="row")
    whole = whole.with_columns(pl.lit("__all__").alias("shard")).select("point", "shard", "metric", "value")
    corpus = corpus.select("point", "shard", "metric", "value")
    return pl.concat([per_shard, corpus, whole]).sort(["point", "shard", "metric"])


def write_sweep(home: Location, table: pl.DataFrame, points: Sequence[str], meta: Mapping[str, Any]) -> Location:
    """The whole sweep's table into the lake (one file, replaced atomically); the points' settings in its footer."""
    settings = {p: point_settings(p).version() for p in points}
    return write_partition(home, SWEEP_TABLE, SWEEP_KEY, table.to_arrow(), meta={**meta, "points": settings})


def read_sweep(home: Location) -> tuple[pl.DataFrame, dict]:
    path = partition_file(home, SWEEP_TABLE, SWEEP_KEY)
    if not path.exists():
        raise FileNotFoundError(f"no edit sweep in {home} ({path}); run `tledit sweep --thresholds ...` first")
    frame = pl.from_arrow(read_partition(home, SWEEP_TABLE, SWEEP_KEY))
    assert isinstance(frame, pl.DataFrame)
    return frame, partition_meta(home, SWEEP_TABLE, SWEEP_KEY)


# --- the table, the chart, the JSON line ---------------------------------------------------------------------


def wide_table(
    health: pl.DataFrame, points: Sequence[str], shard: str = "__all__", checks: CheckSettings | None = None
) -> list[dict]:
    """One dict per point (raw first), in the given order: its settings, SWEEP_METRICS and, with `checks`,
    whether the health checks' rule (verdict.health_verdict) would pass its edited text."""
    rows = health.filter(pl.col("shard") == shard)
    value = {(r["point"], r["metric"]): r["value"] for r in rows.iter_rows(named=True)}
    out = []
    verdict_rows = rows.rename({"point": "variant"})
    for p in [RAW, *points]:
        e = None if p == RAW else point_settings(p)
        row: dict[str, Any] = {
            "point": p,
            "threshold": e.threshold if e else None,
            "strategy": e.strategy if e else None,
            "top_p": e.top_p if e and e.strategy == "top_p" else None,
            "exclude_original": e.exclude_original if e else None,
            "drop_below": e.drop_below if e else None,
        }
        for m in SWEEP_METRICS:
            row[m] = value.get((p, m), 0.0 if p == RAW and m.endswith("_share") and m != "top64_share" else None)
        if checks is not None and e is not None:
            row["checks_pass"] = health_verdict(verdict_rows, p, shard, checks)[0]
        out.append(row)
    return out


def knee(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The first point, weakest edit first, that the health checks' rule fails: where editing starts to cost."""
    for r in rows:
        if r.get("checks_pass") is False:
            return r
    return None


def _cell(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    return format(v, fmt)


def report_lines(rows: Sequence[Mapping[str, Any]], probe: Mapping[str, tuple[float, float]] | None = None) -> list[str]:
    """The sweep's table as text: one line per point (raw first), whole-corpus values."""
    head = (
        f"{'point':<28} {'p':>6} {'eligible':>9} {'changed':>9} {'deleted':>8} {'tail_cov':>9} {'js_bits':>8} "
        f"{'top64':>7} {'distinct2':>9} {'checks':>6}"
    )
    if probe:
        head += f" {'probe ppl':>16}"
    lines = [head]
    for r in rows:
        line = (
            f"{r['point']:<28} {_cell(r['threshold'], '.4g'):>6} {_cell(r['eligible_share'], '.2%'):>9} "
            f"{_cell(r['changed_share'], '.2%'):>9} {_cell(r['deleted_share'], '.2%'):>8} {_cell(r['tail_coverage'], '.4f'):>9} "
            f"{_cell(r['js_divergence_vs_raw'], '.5f'):>8} {_cell(r['top64_share'], '.4f'):>7} {_cell(r['distinct_2'], '.4f'):>9} "
            f"{_cell(r.get('checks_pass'), ''):>6}"
        )
        if probe:
            m = probe.get(r["point"])
            line += f" {f'{m[0]:.1f} +- {m[1]:.1f}' if m else '-':>16}"
        lines.append(line)
    k = knee(rows[1:])
    lines.append(
        f"editing starts to cost the tail at {k['point']} (the health checks fail there)"
        if k
        else "the health checks pass at every point swept"
    )
    return lines


def summary(rows: Sequence[Mapping[str, Any]], probe: Mapping[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """The JSON line: whole-corpus values per point, in the order of the points (raw's values apart)."""
    pts = [r for r in rows if r["point"] != RAW]
    raw = next((r for r in rows if r["point"] == RAW), {})

    def val(v: Any) -> Any:
        return round(v, 6) if isinstance(v, float) and math.isfinite(v) else v

    out: dict[str, Any] = {"points": [r["point"] for r in pts], "thresholds": [r["threshold"] for r in pts]}
    for m in SWEEP_METRICS:
        out[m] = [val(r[m]) for r in pts]
    out["checks_pass"] = [r.get("checks_pass") for r in pts]
    k = knee(pts)
    out["knee"] = k["point"] if k else None
    out["raw"] = {m: val(raw.get(m)) for m in ("tail_coverage", "js_divergence_vs_raw", "top64_share", "distinct_2", "entropy_2")}
    if probe:
        out["heldout_ppl"] = [val(probe[r["point"]][0]) if r["point"] in probe else None for r in pts]
        out["heldout_ppl_ci95"] = [val(probe[r["point"]][1]) if r["point"] in probe else None for r in pts]
        out["raw"]["heldout_ppl"] = val(probe[RAW][0]) if RAW in probe else None
    return out


def summary_json(rows: Sequence[Mapping[str, Any]], probe: Mapping[str, tuple[float, float]] | None = None) -> str:
    return json.dumps(summary(rows, probe))


def sweep_chart(rows: Sequence[Mapping[str, Any]]) -> str:
    """One SVG: against the changed share (log axis), what raw's tail lost, the divergence from raw and the
    head's extra concentration. All three are 0 at raw; the point where they leave 0 is the answer."""
    raw = next(r for r in rows if r["point"] == RAW)
    pts = sorted((r for r in rows if r["point"] != RAW and (r["changed_share"] or 0) > 0), key=lambda r: r["changed_share"])

    def series(f) -> list[tuple[float, float]]:
        return [(100 * r["changed_share"], f(r)) for r in pts if f(r) is not None]

    return line_chart_svg(
        {
            "tail lost": series(lambda r: None if r["tail_coverage"] is None else 1 - r["tail_coverage"]),
            "JS vs raw (bits)": series(lambda r: r["js_divergence_vs_raw"]),
            "top64 - raw's": series(
                lambda r: (
                    None if r["top64_share"] is None or raw["top64_share"] is None else r["top64_share"] - raw["top64_share"]
                )
            ),
        },
        "Edit sweep: what each point costs (whole corpus; tail lost = 1 - tail_coverage)",
        "changed share of scored tokens (%, log scale)",
        "share / bits",
        log_x=True,
    )


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The sweep's table for the UI (markdown)."""
    cols = ["point", "threshold", *SWEEP_METRICS, "checks_pass"]
    lines = ["| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
    for r in rows:
        cells = [r["point"], _cell(r["threshold"], ".4g")]
        cells += [_cell(r[m], ".5f") for m in SWEEP_METRICS]
        cells.append(_cell(r.get("checks_pass"), ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
