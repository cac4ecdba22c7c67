"""Distribution-health numbers: concentration of n-grams and the token-probability histogram."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from tledit_pipeline.health import (
    PROB_BINS,
    bar_chart,
    concentration,
    histogram_chart,
    perplexity,
    probability_histogram,
)
from tledit_pipeline.ngrams import ngram_counts


def _counts(n: int, values: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {"n": [n] * len(values), "ngram": [f"g{i}" for i in range(len(values))], "count": values},
        schema={"n": pl.Int8, "ngram": pl.String, "count": pl.UInt32},
    )


def test_concentration_on_counted_text():
    m = concentration(ngram_counts(["The cat sat. The cat!", "cat sat"]))
    # Unigrams: cat 3, sat 2, the 2, . 1, ! 1 -> 5 distinct of 9.
    assert m["distinct_1"] == pytest.approx(5 / 9)
    p = np.array([3, 2, 2, 1, 1]) / 9
    assert m["entropy_1"] == pytest.approx(float(-(p * np.log(p)).sum()))
    assert m["top40_share_1"] == pytest.approx(1.0)
    # Bigrams: 2, 2, 1, 1, 1 -> 5 distinct of 7.
    assert m["distinct_2"] == pytest.approx(5 / 7)
    # Trigrams: five distinct, each once.
    assert m["distinct_3"] == pytest.approx(1.0)
    assert m["entropy_3"] == pytest.approx(math.log(5))


def test_concentration_top_k_shares():
    # One n-gram seen 50 times, 50 seen once: total 100.
    counts = pl.concat([_counts(2, [1] * 25 + [50] + [1] * 25)])
    m = concentration(counts)
    assert m["distinct_2"] == pytest.approx(51 / 100)
    assert m["top40_share_2"] == pytest.approx((50 + 39) / 100)
    assert m["top64_share_2"] == pytest.approx(1.0)
    p = np.array([0.5] + [0.01] * 50)
    assert m["entropy_2"] == pytest.approx(float(-(p * np.log(p)).sum()))
    assert set(m) == {"distinct_2", "entropy_2", "top40_share_2", "top64_share_2"}


def test_concentration_uniform_and_degenerate():
    m = concentration(pl.concat([_counts(1, [1] * 100), _counts(3, [10])]))
    assert m["distinct_1"] == pytest.approx(1.0)
    assert m["entropy_1"] == pytest.approx(math.log(100))
    assert m["top40_share_1"] == pytest.approx(0.40)
    assert m["top64_share_1"] == pytest.approx(0.64)
    assert m["distinct_3"] == pytest.approx(0.1)
    assert m["entropy_3"] == pytest.approx(0.0)
    assert m["top40_share_3"] == pytest.approx(1.0)


def test_more_repetition_means_more_concentration():
    human = concentration(ngram_counts(["the cat sat on a mat while a dog ran past the old red barn"]))
    repetitive = concentration(ngram_counts(["the cat the cat the cat the cat the cat the cat the cat"]))
    assert repetitive["distinct_2"] < human["distinct_2"]
    assert repetitive["entropy_2"] < human["entropy_2"]


def test_probability_histogram_hand_checked():
    p = np.array([0.05, 0.15, 0.55, 0.95, 0.995, 1.0])
    lp = np.append(np.log(p), np.nan).astype(np.float32)  # the NaN (position 0) is not counted
    h = probability_histogram(lp)
    assert set(h) == {f"prob_bin_{i:02d}" for i in range(PROB_BINS)} | {"prob_bin_099"}
    bins = np.array([h[f"prob_bin_{i:02d}"] for i in range(PROB_BINS)])
    assert bins.sum() == pytest.approx(1.0)
    expected = np.zeros(PROB_BINS)
    expected[[0, 1, 5]] = 1 / 6
    expected[9] = 3 / 6  # 0.95, 0.995 and 1.0 (the last bin is closed)
    np.testing.assert_allclose(bins, expected, atol=1e-12)
    assert h["prob_bin_099"] == pytest.approx(2 / 6)


def test_probability_histogram_random_sums_to_one():
    rng = np.random.default_rng(0)
    lp = np.log(rng.uniform(1e-6, 1.0, 5000)).astype(np.float32)
    h = probability_histogram(lp)
    assert sum(h[f"prob_bin_{i:02d}"] for i in range(PROB_BINS)) == pytest.approx(1.0)
    assert h["prob_bin_099"] == pytest.approx(float((np.exp(lp.astype(np.float64)) >= 0.99).mean()))
    assert 0 <= h["prob_bin_099"] <= h["prob_bin_09"]  # P >= 0.99 is part of the last decile


def test_probability_histogram_empty():
    assert probability_histogram(np.array([np.nan, np.nan])) == {}
    assert probability_histogram(np.array([], dtype=np.float32)) == {}


def test_perplexity():
    assert perplexity(np.log(np.array([0.5, 0.5, np.nan]))) == pytest.approx(2.0)
    assert math.isnan(perplexity(np.array([np.nan])))


def test_histogram_chart_has_every_bin_label():
    h = probability_histogram(np.log(np.array([0.05, 0.5, 0.999])))
    md = histogram_chart(h)
    labels = [f"[{i / 10:.1f}, {(i + 1) / 10:.1f})" for i in range(PROB_BINS)] + ["P >= 0.99"]
    for label in labels:
        assert f"| {label} |" in md
    assert md.startswith("**Token probability under the prior (U-shape)**")
    assert "|---|---:|---|" in md
    assert md.count("\n| ") == len(labels) + 1  # header + one row per bin


def test_histogram_chart_of_empty_histogram():
    md = histogram_chart({}, title="empty")
    for i in range(PROB_BINS):
        assert f"[{i / 10:.1f}, {(i + 1) / 10:.1f})" in md
    assert "| P >= 0.99 | 0.000 |" in md


def test_bar_chart():
    rows = [("alpha", 0.5), ("beta", 0.25), ("gamma", 0.0)]
    md = bar_chart(rows, width=10, title="T")
    for label, v in rows:
        assert f"| {label} | {v:.3f} |" in md
    lines = md.splitlines()
    assert lines[0] == "**T**"
    assert "`" + "█" * 10 + "`" in md  # the largest value gets the full width
    assert "`" + "█" * 5 + "`" in md
    assert bar_chart([("zero", 0.0)]).endswith("| zero | 0.000 | `` |")
    untitled = bar_chart(rows)
    assert untitled.splitlines()[0] == "| bin | share | |"
