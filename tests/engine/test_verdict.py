"""The health verdict at every shard size: within the noise of a small shard it passes, a real collapse fails at
any size, a large shard is held to the threshold, and a failure is one line with measured and allowed values."""

import duckdb
import polars as pl
import pytest

from tledit_pipeline.health import ngram_health
from tledit_pipeline.ngrams import profile
from tledit_pipeline.settings import CheckSettings
from tledit_pipeline.verdict import health_verdict, js_lower_bound, kept_share_upper_bound


def _health(kept: int, rare: int, js: float = 0.0, shard: str = "s", features: int | None = None) -> pl.DataFrame:
    rows = [
        ("raw", shard, "tail_coverage", 1.0),
        ("raw", shard, "rare_bigrams", float(rare)),
        ("edited", shard, "tail_coverage", kept / rare),
        ("edited", shard, "js_divergence_vs_raw", js),
    ]
    if features is not None:
        rows.append(("raw", shard, "hashed_features", float(features)))
    return pl.DataFrame(rows, schema=["variant", "shard", "metric", "value"], orient="row")


# Two short real documents (about 70 prior tokens, 100 hashed features): a shard of an SFT set split in many files.
TINY_SHARD = [
    "Every solution breeds new problems. If anything can go wrong, it will, and at the worst possible moment.",
    "Space: the final frontier. These are the voyages of the starship Enterprise, to boldly go where no man has gone before.",
]


def _tiny_shard_health(edited: list[str]) -> pl.DataFrame:
    """distribution_health rows of the tiny shard and an edit of it, from the pipeline's own n-gram SQL."""
    con = duckdb.connect()
    con.register("ngram_profile", profile("tiny", {"raw": TINY_SHARD, "edited": edited}).to_arrow())
    return ngram_health(con)


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
    assert "js_divergence_vs_raw 0.0300, allowed at most 0.01" in line  # rows without a feature count: the absolute bound
    ok, _, line = health_verdict(_health(50, 50, js=0.5, shard="s7", features=120), "edited", "s7", CheckSettings())
    assert not ok and "\n" not in line
    assert (
        "js_divergence_vs_raw 0.5000 (over 120 hashed features; lower bound 0.2857 at z=3)" in line
        and "allowed at most 0.01" in line
    )


def test_the_js_bound_narrows_with_the_count():
    assert js_lower_bound(0.03, 0) == 0.03  # no count stored: the JS itself
    gaps = [0.02 - js_lower_bound(0.02, n) for n in (100, 1000, 10**4, 10**6)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 0.001


def test_a_tiny_shard_passes_a_few_changed_words_and_fails_a_replaced_text():
    """At 70 tokens one changed word moves JS past the absolute 0.01; a text mostly replaced is a collapse."""
    few = [TINY_SHARD[0].replace("breeds", "creates"), TINY_SHARD[1]]  # what p = 0.95 changes in one such shard
    replaced = [
        "Nothing here resembles the original sentence at all, apart from a couple of words.",
        "Space: completely unrelated filler text was written here instead of the voyages of anyone.",
    ]
    settings = CheckSettings()
    rows = _tiny_shard_health(few)
    ok, meta, line = health_verdict(rows, "edited", "tiny", settings)
    assert meta["js_divergence_vs_raw"] > settings.max_js_divergence  # the old absolute bound would fail it
    assert 50 < meta["hashed_features"] < 150 and ok, line
    ok, meta, line = health_verdict(_tiny_shard_health(replaced), "edited", "tiny", settings)
    assert not ok and meta["js_divergence_vs_raw"] > 0.5
    assert "js_divergence_vs_raw" in line and "of raw's tail" in line  # both halves of the verdict see it


@pytest.mark.parametrize(
    ("js", "features", "passed"),
    [
        (0.03, 100, True),  # one changed word in a two-document shard (3 of 100 features moved): noise
        (0.06, 100, True),  # two
        (0.12, 100, False),  # four changed words of about fifty: a real change even at 100 features
        (0.6, 30, False),  # a tiny shard mostly replaced
        (0.012, 10**6, False),  # a large shard is held to the threshold itself
        (0.0095, 10**6, True),
    ],
)
def test_js_verdict_accounts_for_the_shard_size(js, features, passed):
    ok, meta, _ = health_verdict(_health(50, 50, js=js, features=features), "edited", "s", CheckSettings())
    assert ok is passed
    assert meta["hashed_features"] == features and meta["js_divergence_lower_bound"] <= js


def test_a_variant_with_no_word_left_fails():
    """Every token deleted: the edited text has no n-grams, so no tail metric at all; that is a lost tail, not a pass."""
    health = _tiny_shard_health(["", ""]).filter(pl.col("variant") == "raw")
    health = pl.concat([health, pl.DataFrame([("edited", "tiny", "deleted_share", 1.0)], schema=health.schema, orient="row")])
    passed, meta, line = health_verdict(health, "edited", "tiny", CheckSettings())
    assert not passed and meta["tail_coverage"] == 0.0 and line.startswith("edited keeps 0.0000 of raw's tail")
    # A variant with no rows at all (a baseline that sampled none of the shard's documents) is not judged here.
    assert health_verdict(health.filter(pl.col("variant") == "raw"), "synthetic", "tiny", CheckSettings())[0]
