"""Word n-gram counts: lowercased words and punctuation, n = 1..3, never across documents."""

from __future__ import annotations

import hashlib

import polars as pl

from tledit_pipeline.ngrams import BUCKETS, hashed_bucket, ngram_counts, profile, word_tokens

DOCS = ["The cat sat. The cat!", "cat sat", "   "]

EXPECTED = {
    1: {"cat": 3, "sat": 2, "the": 2, ".": 1, "!": 1},
    2: {"the cat": 2, "cat sat": 2, "sat .": 1, ". the": 1, "cat !": 1},
    3: {"the cat sat": 1, "cat sat .": 1, "sat . the": 1, ". the cat": 1, "the cat !": 1},
}


def _as_dict(df: pl.DataFrame) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for row in df.iter_rows(named=True):
        out.setdefault(row["n"], {})[row["ngram"]] = row["count"]
    return out


def test_exact_counts_on_a_hand_checked_example():
    counts = ngram_counts(DOCS)
    assert counts.columns == ["n", "ngram", "count", "bucket"]
    assert counts.schema["count"] == pl.UInt32
    assert _as_dict(counts) == EXPECTED


def test_no_ngram_crosses_documents():
    got = set(ngram_counts(DOCS)["ngram"].to_list())
    for crossing in ("! cat", "cat ! cat", "! cat sat"):
        assert crossing not in got
    # Joined into one document, the crossing n-grams do appear.
    joined = set(ngram_counts([" ".join(DOCS)])["ngram"].to_list())
    assert {"! cat", "cat ! cat", "! cat sat"} <= joined


def test_lowercase_and_punctuation_tokens():
    toks = word_tokens(["Hello, WORLD!! it's 42."])
    assert toks["tok"].to_list() == ["hello", ",", "world", "!", "!", "it", "'", "s", "42", "."]
    assert toks["i"].to_list() == list(range(10))
    assert set(toks["doc"].to_list()) == {0}


def test_unicode_words():
    counts = _as_dict(ngram_counts(["Caf\u00e9 CAF\u00c9 \u65e5\u672c"], n_max=1))
    assert counts[1]["caf\u00e9"] == 2
    assert counts[1]["\u65e5\u672c"] == 1


def test_n_max_and_short_docs():
    counts = ngram_counts(["a b", "c"], n_max=3)
    d = _as_dict(counts)
    assert d[1] == {"a": 1, "b": 1, "c": 1}
    assert d[2] == {"a b": 1}
    assert 3 not in d
    assert set(ngram_counts(["a b c d"], n_max=2)["n"].to_list()) == {1, 2}


def test_sorted_for_stable_bytes():
    counts = ngram_counts(DOCS)
    ns = counts["n"].to_list()
    assert ns == sorted(ns)
    for n in (1, 2, 3):
        part = counts.filter(pl.col("n") == n)
        keys = list(zip((-c for c in part["count"].to_list()), part["ngram"].to_list()))
        assert keys == sorted(keys)
    assert counts.equals(ngram_counts(list(DOCS)))


def test_empty_input():
    assert ngram_counts([]).height == 0
    assert ngram_counts(["   ", ""]).height == 0


def test_profile_long_table():
    df = profile("s1", {"raw": ["a b a"], "edited": ["a c"]}, n_max=2)
    assert df.columns == ["shard", "variant", "n", "ngram", "count", "bucket"]
    assert set(df["shard"].to_list()) == {"s1"}
    raw = df.filter(pl.col("variant") == "raw")
    assert _as_dict(raw.drop("shard", "variant")) == {1: {"a": 2, "b": 1}, 2: {"a b": 1, "b a": 1}}
    edited = df.filter(pl.col("variant") == "edited")
    assert _as_dict(edited.drop("shard", "variant")) == {1: {"a": 1, "c": 1}, 2: {"a c": 1}}


def test_hashed_buckets_are_dsirs():
    """Uni- and bigrams carry DSIR's bucket: sha256 of the n-gram string modulo 10,000; trigrams none."""
    counts = ngram_counts(DOCS)
    for row in counts.iter_rows(named=True):
        if row["n"] <= 2:
            assert row["bucket"] == int(hashlib.sha256(row["ngram"].encode()).hexdigest(), 16) % BUCKETS
        else:
            assert row["bucket"] is None
    assert hashed_bucket(pl.Series(["the cat", "caf\u00e9"]), buckets=7).to_list() == [
        int(hashlib.sha256(g.encode()).hexdigest(), 16) % 7 for g in ("the cat", "caf\u00e9")
    ]
    assert ngram_counts([]).columns == ["n", "ngram", "count", "bucket"]
