"""Word n-gram profiles of a corpus variant: lowercased word and punctuation tokens, n = 1..3.

Computed in polars (explode, shift within document, group) rather than Python loops over tokens.
"""

from __future__ import annotations

import polars as pl

WORD_PATTERN = r"\w+|[^\w\s]"
N_MAX = 3


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
    """Columns n, ngram, count; n-grams never cross document boundaries. Sorted for stable bytes."""
    toks = word_tokens(texts)
    frames = []
    for n in range(1, n_max + 1):
        parts = [pl.col("tok").shift(-j).over("doc") for j in range(n)]
        grams = toks.select(pl.concat_str(parts, separator=" ").alias("ngram")).drop_nulls()
        frames.append(grams.group_by("ngram").len("count").with_columns(pl.lit(n, pl.Int8).alias("n")))
    if not frames:
        return pl.DataFrame(schema={"n": pl.Int8, "ngram": pl.String, "count": pl.UInt32})
    return (
        pl.concat(frames)
        .select("n", "ngram", pl.col("count").cast(pl.UInt32))
        .sort(["n", "count", "ngram"], descending=[False, True, False])
    )


def profile(shard: str, variants: dict[str, list[str]], n_max: int = N_MAX) -> pl.DataFrame:
    """n-gram counts of several variants of one shard in one long table: shard, variant, n, ngram, count."""
    frames = [
        ngram_counts(texts, n_max).select(pl.lit(shard).alias("shard"), pl.lit(name).alias("variant"), pl.all())
        for name, texts in variants.items()
    ]
    return pl.concat(frames)
