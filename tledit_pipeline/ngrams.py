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


def ngram_counts(texts: list[str], n_max: int = N_MAX) -> pl.DataFrame:
    """Columns n, ngram, count, bucket (null for n > 2); n-grams never cross document boundaries.

    Sorted for stable bytes.
    """
    toks = word_tokens(texts)
    frames = []
    for n in range(1, n_max + 1):
        parts = [pl.col("tok").shift(-j).over("doc") for j in range(n)]
        grams = toks.select(pl.concat_str(parts, separator=" ").alias("ngram")).drop_nulls()
        frames.append(grams.group_by("ngram").len("count").with_columns(pl.lit(n, pl.Int8).alias("n")))
    if not frames:
        return pl.DataFrame(schema={"n": pl.Int8, "ngram": pl.String, "count": pl.UInt32, "bucket": pl.UInt16})
    counts = (
        pl.concat(frames)
        .select("n", "ngram", pl.col("count").cast(pl.UInt32))
        .sort(["n", "count", "ngram"], descending=[False, True, False])
    )
    hashed = counts.get_column("n") <= HASHED_N
    bucket = pl.Series("bucket", [None] * counts.height, dtype=pl.UInt16)
    bucket = bucket.scatter(hashed.arg_true(), hashed_bucket(counts.filter(hashed).get_column("ngram")))
    return counts.with_columns(bucket)


def profile(shard: str, variants: dict[str, list[str]], n_max: int = N_MAX) -> pl.DataFrame:
    """n-gram counts of several variants of one shard in one long table: shard, variant, n, ngram, count."""
    frames = [
        ngram_counts(texts, n_max).select(pl.lit(shard).alias("shard"), pl.lit(name).alias("variant"), pl.all())
        for name, texts in variants.items()
    ]
    return pl.concat(frames)
