"""The tail verdict at every shard size: within the noise of a small shard it passes, a real collapse fails at
any size, a large shard is held to the threshold, and a failure is one line with measured and allowed values."""

import polars as pl
import pytest

from tledit_pipeline.settings import CheckSettings
from tledit_pipeline.verdict import health_verdict, kept_share_upper_bound


def _health(kept: int, rare: int, js: float = 0.0, shard: str = "s") -> pl.DataFrame:
    rows = [
        ("raw", shard, "tail_coverage", 1.0),
        ("raw", shard, "rare_bigrams", float(rare)),
        ("edited", shard, "tail_coverage", kept / rare),
        ("edited", shard, "js_divergence_vs_raw", js),
    ]
    return pl.DataFrame(rows, schema=["variant", "shard", "metric", "value"], orient="row")


def test_the_bound_narrows_with_the_count():
    assert kept_share_upper_bound(1.0, 10) == 1.0 and kept_share_upper_bound(0.5, 0) == 1.0
    widths = [kept_share_upper_bound(0.95, n) - 0.95 for n in (10, 100, 1000, 10**5)]
    assert widths == sorted(widths, reverse=True) and widths[-1] < 0.003


@pytest.mark.parametrize(
    ("kept", "rare", "passed"),
    [
        (49, 50, True),  # one changed word in a two-document shard: noise
        (47, 50, True),  # three of 50: still within the noise of 50
        (40, 50, False),  # a fifth of the tail gone: a real loss even at 50
        (5, 20, False),  # collapse of a tiny shard
        (97_500, 100_000, False),  # a large shard is held to the threshold itself
        (98_500, 100_000, True),
    ],
)
def test_tail_verdict_accounts_for_the_shard_size(kept, rare, passed):
    ok, meta, _ = health_verdict(_health(kept, rare), "edited", "s", CheckSettings())
    assert ok is passed
    assert meta["rare_bigrams"] == rare and meta["coverage_ratio"] == pytest.approx(kept / rare, abs=1e-6)


def test_a_failure_is_one_line_with_measured_and_allowed_values():
    ok, _, line = health_verdict(_health(40, 50, js=0.03, shard="s7"), "edited", "s7", CheckSettings())
    assert not ok and "\n" not in line
    assert "keeps 0.8000 of raw's tail (40 of 50 rare bigrams; upper bound 0.9170 at z=3), allowed at least 0.98" in line
    assert "js_divergence_vs_raw 0.0300, allowed at most 0.01" in line
