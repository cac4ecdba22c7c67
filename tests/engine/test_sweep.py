"""The edit sweep's engine: point keys name their settings in full, the grid, and the table's shape."""

from dataclasses import replace

import polars as pl
import pytest

from tledit_pipeline.lake import is_shard_key
from tledit_pipeline.settings import CheckSettings, EditSettings
from tledit_pipeline.sweep import (
    RAW,
    SWEEP_METRICS,
    SweepError,
    knee,
    markdown_table,
    pair_key,
    point_key,
    point_settings,
    report_lines,
    summary,
    sweep_chart,
    sweep_grid,
    wide_table,
)

POINTS = [
    EditSettings(),
    EditSettings(threshold=0.5, top_k=4, beta=1.0, seed=7),
    EditSettings(threshold=0.9, strategy="top_p", top_p=0.95),
    EditSettings(threshold=0.95, exclude_original=True, drop_below=1e-05),
    EditSettings(threshold=1.0, drop_below=0.001),
]


@pytest.mark.parametrize("e", POINTS, ids=point_key)
def test_a_point_key_names_its_settings_in_full(e):
    key = point_key(e)
    assert point_settings(key) == e
    assert point_settings(key).version() == e.version()
    assert is_shard_key(pair_key(key, "macbeth-acts-1-2"))  # usable as a lake key beside a shard
    assert "|" not in key and "--" not in key


def test_distinct_settings_give_distinct_keys():
    keys = {point_key(e) for e in POINTS}
    assert len(keys) == len(POINTS)
    # top_p only names a point when the strategy uses it, as in EditSettings.version()
    assert point_key(EditSettings(top_p=0.5)) == point_key(EditSettings())


@pytest.mark.parametrize("key", ["p0_9-k8", "p0_9-k8-b1_5-s0-zz", "p2_0-k8-b1_5-s0", "p0_90-k8-b1_5-s0", "hello"])
def test_a_key_that_names_no_settings_is_refused(key):
    with pytest.raises(SweepError, match="sweep point"):
        point_settings(key)


def test_grid_is_every_combination_weakest_edit_first():
    base = EditSettings(top_k=6, beta=1.0)
    grid = sweep_grid(base, [0.5, 0.99, 0.9, 0.9], top_ps=[0.8, 0.95], exclude_original=[False, True])
    assert [e.threshold for e in grid][::4] == [0.99, 0.9, 0.5]
    assert len(grid) == 3 * 2 * 2
    assert {(e.top_k, e.beta) for e in grid} == {(6, 1.0)}
    assert all(e.strategy == "top_p" for e in grid)
    assert len({point_key(e) for e in grid}) == len(grid)
    assert sweep_grid(base, [0.9]) == [replace(base, threshold=0.9)]


def test_grid_errors_name_the_point():
    with pytest.raises(SweepError, match="at least one threshold"):
        sweep_grid(EditSettings(), [])
    with pytest.raises(SweepError, match="drop_below"):
        sweep_grid(EditSettings(), [0.5, 0.01], drop_belows=[0.1])


def _health(points: list[str]) -> pl.DataFrame:
    """Rows as build_sweep writes them, the edit growing stronger point by point."""
    rows = [(RAW, "__all__", "tail_coverage", 1.0), (RAW, "__all__", "js_divergence_vs_raw", 0.0)]
    rows += [(RAW, "__all__", "top64_share", 0.2), (RAW, "__all__", "rare_bigrams", 5000.0)]
    for i, p in enumerate(points):
        strength = (i + 1) / len(points)
        rows += [
            (p, "__all__", "changed_share", 0.3 * strength),
            (p, "__all__", "eligible_share", 0.4 * strength),
            (p, "__all__", "deleted_share", 0.0),
            (p, "__all__", "tail_coverage", 1 - 0.05 * strength),
            (p, "__all__", "js_divergence_vs_raw", 0.02 * strength),
            (p, "__all__", "top64_share", 0.2 + 0.01 * strength),
        ]
    return pl.DataFrame(rows, schema=["point", "shard", "metric", "value"], orient="row")


def test_table_json_and_chart_shape():
    pts = [point_key(e) for e in sweep_grid(EditSettings(), [0.99, 0.9, 0.7, 0.5])]
    rows = wide_table(_health(pts), pts, checks=CheckSettings())
    assert [r["point"] for r in rows] == [RAW, *pts]
    out = summary(rows)
    assert out["thresholds"] == [0.99, 0.9, 0.7, 0.5]
    for m in ("changed_share", "tail_coverage", "js_divergence_vs_raw", *SWEEP_METRICS):
        assert len(out[m]) == len(pts)
    assert out["changed_share"] == sorted(out["changed_share"])
    # The checks' rule (tail kept >= 0.98 of raw's, JS <= 0.01) fails first where the edit crosses it.
    assert out["checks_pass"] == [True, True, False, False]
    assert out["knee"] == pts[2] == knee(rows[1:])["point"]
    lines = report_lines(rows)
    assert lines[0].split()[:3] == ["point", "p", "eligible"] and len(lines) == 1 + len(rows) + 1
    assert pts[2] in lines[-1]
    assert markdown_table(rows).count("\n") == len(rows) + 1
    svg = sweep_chart(rows)
    assert svg.startswith("<svg") and svg.count("<polyline") == 3
