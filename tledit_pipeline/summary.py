"""What `tledit run` and `tledit health` report, read from the DuckDB file: run totals and the corpus-wide health table.

The queries live here, beside the lake they read, so the CLI only prints; both take an open connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from tledit_pipeline.errors import TleditError
from tledit_pipeline.health import ordered_variants
from tledit_pipeline.source import REJECTED_FILES, NotTaken

if TYPE_CHECKING:
    import duckdb


@dataclass(frozen=True)
class RunTotals:
    """Documents and token counts of a set of shards, as the edited corpus recorded them."""

    documents: int
    rejected: int
    tokens: int
    scored: int
    eligible: int
    changed: int
    deleted: int


def run_totals(con: duckdb.DuckDBPyConnection, keys: list[str]) -> RunTotals:
    docs, rejected = con.execute(
        "SELECT (SELECT count(*) FROM raw_corpus WHERE list_contains($keys, shard)),"
        " (SELECT count(*) FROM rejected_documents WHERE list_contains($keys, shard))",
        {"keys": keys},
    ).fetchone() or (0, 0)
    tokens, scored, eligible, changed, deleted = con.execute(
        "SELECT coalesce(sum(n_tokens), 0), coalesce(sum(n_scored), 0), coalesce(sum(n_eligible), 0),"
        " coalesce(sum(n_changed), 0), coalesce(sum(n_deleted), 0) FROM edited_corpus WHERE list_contains($keys, shard)",
        {"keys": keys},
    ).fetchone() or (0, 0, 0, 0, 0)
    return RunTotals(docs, rejected, tokens, scored, eligible, changed, deleted)


def not_taken_lines(not_taken: Iterable[NotTaken]) -> list[str]:
    """The summary's lines for the source's files that are not shards: each by name, with the reason."""
    rows = list(not_taken)
    if not rows:
        return []
    lines = [f"  not taken       {len(rows)} file(s) of the source, not read (see view {REJECTED_FILES}):"]
    return lines + [f"                    {n.name}: {n.reason}" for n in rows]


def corpus_health(con: duckdb.DuckDBPyConnection, where: str) -> pl.DataFrame:
    """The '__all__' rows of distribution_health: one row per metric, one column per variant (in display order).

    `where` names the DuckDB file in the error a user sees when no run has built the table yet.
    """
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'distribution_health'").fetchone()[0]:  # type: ignore[index]
        raise TleditError(f"{where} has no distribution_health table; run `tledit run` first")
    rows = pl.from_arrow(
        con.execute("SELECT variant, metric, value FROM distribution_health WHERE shard = '__all__'").to_arrow_table()
    )
    assert isinstance(rows, pl.DataFrame)
    wide = rows.pivot(on="variant", index="metric", values="value").sort("metric")
    return wide.select(["metric", *ordered_variants(wide.columns)])
