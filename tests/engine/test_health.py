"""Distribution-health numbers: concentration of n-grams and the token-probability histogram."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from tledit_pipeline.errors import TleditError
from tledit_pipeline.health import (
    PROB_BINS,
    bar_chart,
    build_health_table,
    document_perplexities,
    histogram_chart,
    ngram_health,
    perplexity,
    perplexity_polygons,
    probability_histogram,
)
from tledit_pipeline.ngrams import profile
from tledit_pipeline.synthetic import SYNTHETIC_SCHEMA


def _metrics(variants: dict[str, list[str]], shard: str = "s1") -> dict[tuple[str, str], float]:
    """The SQL n-gram metrics of hand-built variants of one shard, keyed by (variant, metric)."""
    con = duckdb.connect()
    con.register("ngram_profile", profile(shard, variants).to_arrow())
    rows = ngram_health(con)
    assert set(rows.get_column("shard").to_list()) == {shard, "__all__"}
    return {(r["variant"], r["metric"]): r["value"] for r in rows.filter(pl.col("shard") == shard).iter_rows(named=True)}


def test_concentration_on_counted_text():
    m = _metrics({"raw": ["The cat sat. The cat!", "cat sat"]})
    # Unigrams: cat 3, sat 2, the 2, . 1, ! 1 -> 5 distinct of 9.
    assert m[("raw", "distinct_1")] == pytest.approx(5 / 9)
    p = np.array([3, 2, 2, 1, 1]) / 9
    assert m[("raw", "entropy_1")] == pytest.approx(float(-(p * np.log(p)).sum()))
    # Bigrams: the cat 2, cat sat 2, sat . 1, . the 1, cat ! 1 -> 5 distinct of 7, all within the top 64.
    assert m[("raw", "distinct_2")] == pytest.approx(5 / 7)
    assert m[("raw", "top64_share")] == pytest.approx(1.0)
    assert m[("raw", "tail_mass")] == pytest.approx(1.0)  # every bigram has count <= 2
    # Trigrams: five distinct, each once.
    assert m[("raw", "distinct_3")] == pytest.approx(1.0)
    assert m[("raw", "entropy_3")] == pytest.approx(math.log(5))


def test_top64_share_and_tail_mass():
    # "a b" 100 times, then 100 distinct bigrams once each: 200 bigram occurrences in all.
    heavy = " ".join(["a b ."] * 100)
    rare = " ".join(f"w{i}" for i in range(101))
    m = _metrics({"raw": [heavy, rare]})
    total = 100 + 99 + 100  # "a b" x100, "b ." x100 (incl. the last), ". a" x99, plus 100 rare bigrams
    assert m[("raw", "top64_share")] == pytest.approx((100 + 100 + 99 + 61) / (total + 100))
    assert m[("raw", "tail_mass")] == pytest.approx(100 / (total + 100))


def test_raw_is_its_own_reference():
    m = _metrics(
        {
            "raw": ["the cat sat on a mat", "a dog ran past the barn"],
            "edited": ["the cat sat on a mat", "a dog ran past the barn"],
        }
    )
    for v in ("raw", "edited"):
        assert m[(v, "tail_coverage")] == 1.0
        assert m[(v, "js_divergence_vs_raw")] == pytest.approx(0.0, abs=1e-12)


def test_tail_coverage_hand_checked():
    # raw bigrams: a b, b c, c d (once each, all rare). The variant keeps only "a b".
    m = _metrics({"raw": ["a b c d"], "synthetic": ["a b x y"]})
    assert m[("synthetic", "tail_coverage")] == pytest.approx(1 / 3)
    assert m[("raw", "tail_coverage")] == 1.0


def test_hashed_features_and_js_divergence():
    raw, other = ["alpha beta gamma delta"], ["zeta eta theta iota kappa"]
    m = _metrics({"raw": raw, "synthetic": other})
    counts = profile("s1", {"raw": raw, "synthetic": other}).filter(pl.col("n") <= 2)

    def dist(v):
        c = counts.filter(pl.col("variant") == v).group_by("bucket").agg(pl.col("count").sum())
        return dict(zip(c["bucket"].to_list(), (c["count"] / c["count"].sum()).to_list()))

    p, q = dist("synthetic"), dist("raw")
    for v, d in (("synthetic", p), ("raw", q)):
        h = -sum(x * math.log(x) for x in d.values())
        assert m[(v, "hashed_entropy")] == pytest.approx(h)
        assert m[(v, "hashed_effective_buckets")] == pytest.approx(math.exp(h))
    mid = {b: (p.get(b, 0) + q.get(b, 0)) / 2 for b in set(p) | set(q)}
    js = 0.5 * sum(x * math.log2(x / mid[b]) for b, x in p.items()) + 0.5 * sum(x * math.log2(x / mid[b]) for b, x in q.items())
    assert m[("synthetic", "js_divergence_vs_raw")] == pytest.approx(js)
    assert 0.9 < js <= 1.0  # no shared words: (almost) disjoint buckets


def test_a_corpus_repeated_twice():
    docs = ["the cat sat on the mat", "a dog ran past the barn, the end"]
    once, twice = _metrics({"raw": docs}), _metrics({"raw": docs, "synthetic": docs + docs})
    assert twice[("synthetic", "js_divergence_vs_raw")] == pytest.approx(0.0, abs=1e-12)
    assert twice[("synthetic", "hashed_entropy")] == pytest.approx(once[("raw", "hashed_entropy")])
    assert twice[("synthetic", "top64_share")] == pytest.approx(once[("raw", "top64_share")])
    assert twice[("synthetic", "tail_coverage")] == 1.0
    for n in (1, 2, 3):  # the same distinct n-grams over twice the occurrences
        assert twice[("synthetic", f"distinct_{n}")] == pytest.approx(once[("raw", f"distinct_{n}")] / 2)


def test_more_repetition_means_more_concentration():
    m = _metrics(
        {
            "raw": ["the cat sat on a mat while a dog ran past the old red barn"],
            "synthetic": ["the cat the cat the cat the cat the cat the cat the cat"],
        }
    )
    assert m[("synthetic", "distinct_2")] < m[("raw", "distinct_2")]
    assert m[("synthetic", "hashed_effective_buckets")] < m[("raw", "hashed_effective_buckets")]
    assert m[("synthetic", "tail_coverage")] < 1.0


def test_health_table_over_every_view():
    """The full table: n-gram metrics, the probability histogram, perplexity quantiles and edit shares."""
    con = duckdb.connect()
    con.register(
        "ngram_profile",
        profile("s1", {"raw": ["a b c"], "edited": ["a b c"], "synthetic": ["a b d"], "raw_matched": ["a b"]}).to_arrow(),
    )
    # raw: two documents; teacher-forced log-probs (position 0 has none).
    con.register(
        "token_scores",
        pa.table(
            {
                "shard": ["s1"] * 6,
                "doc_id": ["x", "x", "x", "y", "y", "y"],
                "pos": [0, 1, 2, 0, 1, 2],
                "logprob": pa.array([None, math.log(0.5), math.log(0.995), None, math.log(0.05), math.log(0.25)], pa.float32()),
            }
        ),
    )
    con.register(
        "edited_corpus",
        pa.table(
            {
                "shard": ["s1", "s1"],
                "n_tokens": [3, 3],
                "n_scored": [2, 2],
                "n_eligible": [1, 0],
                "n_changed": [1, 0],
                "n_deleted": [0, 1],
            }
        ),
    )
    # The baseline wrote one token after a one-token prefix of x, with P = 0.9.
    con.register(
        "synthetic_corpus",
        pa.table(
            {
                "shard": ["s1"],
                "doc_id": ["x"],
                "prefix_tokens": pa.array([1], pa.int32()),
                "new_tokens": pa.array([1], pa.int32()),
                "pieces": pa.array([[{"start": 0, "prefix": 1, "target": 2, "new": 1}]], SYNTHETIC_SCHEMA.field("pieces").type),
                "logprobs": pa.array([[math.log(0.9)]], pa.list_(pa.float32())),
            }
        ),
    )
    health = build_health_table(con)
    v = {(r["variant"], r["shard"], r["metric"]): r["value"] for r in health.iter_rows(named=True)}
    for shard in ("s1", "__all__"):
        assert v[("raw", shard, "prob_bin_00")] == pytest.approx(0.25)
        assert v[("raw", shard, "prob_bin_09")] == pytest.approx(0.25)
        assert v[("raw", shard, "prob_bin_099")] == pytest.approx(0.25)
        assert v[("synthetic", shard, "prob_bin_09")] == pytest.approx(1.0)
        assert v[("edited", shard, "eligible_share")] == pytest.approx(1 / 4)
        assert v[("edited", shard, "changed_share")] == pytest.approx(1 / 4)
        assert v[("edited", shard, "deleted_share")] == pytest.approx(1 / 4)
    ppl_x, ppl_y = math.exp(-(math.log(0.5) + math.log(0.995)) / 2), math.exp(-(math.log(0.05) + math.log(0.25)) / 2)
    assert v[("raw", "__all__", "ppl_p50")] == pytest.approx((ppl_x + ppl_y) / 2, rel=1e-5)
    assert v[("raw", "__all__", "ppl_p10")] == pytest.approx(ppl_x + 0.1 * (ppl_y - ppl_x), rel=1e-5)
    assert v[("synthetic", "__all__", "ppl_p50")] == pytest.approx(1 / 0.9, rel=1e-5)
    assert v[("raw_matched", "__all__", "ppl_p50")] == pytest.approx(2.0, rel=1e-5)  # raw x at position 1 only
    assert v[("synthetic", "s1", "tail_coverage")] == pytest.approx(1 / 2)  # keeps "a b", loses "b c"


def test_raw_matched_reads_every_piece_of_the_baseline():
    """A document written in two pieces: raw_matched takes raw's scores at both pieces' generated positions."""
    con = duckdb.connect()
    lp = [None, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    con.register(
        "token_scores",
        pa.table(
            {
                "shard": ["s1"] * 8,
                "doc_id": ["x"] * 8,
                "pos": list(range(8)),
                "logprob": pa.array([None if v is None else -v for v in lp], pa.float32()),
            }
        ),
    )
    pieces = [{"start": 0, "prefix": 1, "target": 3, "new": 2}, {"start": 4, "prefix": 2, "target": 2, "new": 1}]
    con.register(
        "synthetic_corpus",
        pa.table(
            {
                "shard": ["s1"],
                "doc_id": ["x"],
                "new_tokens": pa.array([3], pa.int32()),
                "pieces": pa.array([pieces], SYNTHETIC_SCHEMA.field("pieces").type),
                "logprobs": pa.array([[-1.0, -1.0, -1.0]], pa.list_(pa.float32())),
            }
        ),
    )
    ppl = document_perplexities(con).filter(pl.col("variant") == "raw_matched")["ppl"].to_list()
    assert ppl == [pytest.approx(math.exp((0.1 + 0.2 + 0.6) / 3), rel=1e-5)]  # positions 1, 2 and 6


def test_health_table_names_missing_views():
    con = duckdb.connect()
    con.register("ngram_profile", profile("s1", {"raw": ["a b"]}).to_arrow())
    with pytest.raises(TleditError, match="token_scores, edited_corpus, synthetic_corpus"):
        build_health_table(con)


def test_perplexity_polygons_share_sums_to_one():
    ppl = pl.DataFrame(
        {"variant": ["raw"] * 4 + ["synthetic"] * 2, "shard": ["s"] * 6, "ppl": [2.0, 10.0, 50.0, 400.0, 3.0, 4.0]}
    )
    poly = perplexity_polygons(ppl, bins=8)
    assert set(poly) == {"raw", "synthetic"}
    for pts in poly.values():
        assert len(pts) == 8 and sum(y for _, y in pts) == pytest.approx(1.0)
        xs = [x for x, _ in pts]
        assert xs == sorted(xs) and 2.0 <= xs[0] and xs[-1] <= 400.0


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
