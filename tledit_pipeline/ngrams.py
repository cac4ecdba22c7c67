"""Word n-gram profiles of a corpus variant: lowercased word and punctuation tokens, n = 1..3.

Computed in polars (explode, shift within document, group) rather than Python loops over tokens.
Unigrams and bigrams also carry their hashed feature bucket, as in the paper's DSIR-style analysis:
sha256 of the n-gram string modulo 10,000 (DSIR's hash_buckets), stable across runs and versions.
"""

from __future__ import annotations

import hashlib

import polars as pl

WORD_PATTERN = r"\w+|[^\w\s]"
N_MAX = 3
BUCKETS = 10_000
HASHED_N = 2  # hashed features are uni- and bigrams


def hashed_bucket(ngrams: pl.Series, buckets: int = BUCKETS) -> pl.Series:
    """DSIR's bucket of each n-gram string. One hash per distinct n-gram, never per token."""
    return pl.Series(
        [int(hashlib.sha256(g.encode("utf-8")).hexdigest(), 16) % buckets for g in ngrams.to_list()],
        dtype=pl.UInt16,
    )


def word_tokens(texts: list[str]) -> pl.DataFrame:
    """One row per word token: doc (index), i (position in doc), tok."""
    return (
        pl.DataFrame({"text": texts}, schema={"text": pl.String})
        .with_row_index("doc")
        .select("doc", pl.col("text").str.to_lowercase().str.extract_all(WORD_PATTERN).alias("tok"))
        .explode("tok")
        .drop_nulls("tok")
        .with_columns(pl.int_range(pl.len()).over("doc").alias("i"))
    )


def _counts(texts: list[str], group: list[int], n_max: int) -> pl.DataFrame:
    """Columns g (the text's group), n, ngram, count (UInt32), bucket, sorted by g, n, count desc, ngram.

    One polars pass for all groups (the variants of a shard): a small shard's cost is the per-call
    overhead, not the counting; each distinct uni/bigram is hashed once.
    """
    toks = word_tokens(texts)
    toks = toks.with_columns(pl.Series("g", group, pl.UInt32).gather(toks.get_column("doc")))
    frames = []
    for n in range(1, n_max + 1):
        parts = [pl.col("tok").shift(-j).over("doc") for j in range(n)]
        grams = toks.select("g", pl.concat_str(parts, separator=" ").alias("ngram")).drop_nulls()
        frames.append(grams.group_by("g", "ngram").len("count").with_columns(pl.lit(n, pl.Int8).alias("n")))
    schema = {"g": pl.UInt32, "n": pl.Int8, "ngram": pl.String, "count": pl.UInt32, "bucket": pl.UInt16}
    if not frames:
        return pl.DataFrame(schema=schema)
    counts = (
        pl.concat(frames)
        .select("g", "n", "ngram", pl.col("count").cast(pl.UInt32))
        .sort(["g", "n", "count", "ngram"], descending=[False, False, True, False])
    )
    hashed = counts.filter(pl.col("n") <= HASHED_N).get_column("ngram").unique()
    buckets = dict(zip(hashed.to_list(), hashed_bucket(hashed).to_list(), strict=True))
    bucket = pl.when(pl.col("n") <= HASHED_N).then(pl.col("ngram").replace_strict(buckets, default=None, return_dtype=pl.UInt16))
    return counts.with_columns(bucket.cast(pl.UInt16).alias("bucket")).select(list(schema))


def ngram_counts(texts: list[str], n_max: int = N_MAX) -> pl.DataFrame:
    """Columns n, ngram, count, bucket (null for n > 2); n-grams never cross document boundaries.

    Sorted for stable bytes.
    """
    return _counts(texts, [0] * len(texts), n_max).drop("g")


def profile(shard: str, variants: dict[str, list[str]], n_max: int = N_MAX) -> pl.DataFrame:
    """n-gram counts of several variants of one shard in one long table: shard, variant, n, ngram, count."""
    names = list(variants)
    counts = _counts([t for v in names for t in variants[v]], [i for i, v in enumerate(names) for _ in variants[v]], n_max)
    variant = pl.col("g").replace_strict(dict(enumerate(names)), default=None, return_dtype=pl.String)
    return counts.select(pl.lit(shard, pl.String).alias("shard"), variant.alias("variant"), pl.exclude("g"))
