"""Iterative generations: the fixed prior applied again to the previous generation's edited text.

Generation 0 is the raw text; generation g >= 1 is generation g-1's text edited with the scores the prior
gives generation g-1's text. Each generation's text and each text's scores are assets of their own in the
lake (one asset per generation, so Dagster shows their lineage edge by edge):

    raw_corpus -> token_scores -> edited_corpus -> token_scores_g1 -> edited_corpus_g2 -> token_scores_g2 -> ...

token_scores_g{g} holds the prior's scores of generation g's text: generation g's perplexity and token
probabilities under the prior, and the input of generation g+1. With N generations (N >= 2) the last
generation's text is scored too, so every generation has a perplexity; with N = 1 nothing after
edited_corpus exists, so a threshold backfill stays free of the model.
"""

from __future__ import annotations

import re

RAW = "raw_corpus"
SCORES = "token_scores"
EDITED = "edited_corpus"

_NAME_RE = re.compile(r"^(token_scores|edited_corpus)(?:_g([1-9][0-9]*))?$")


def text_asset(g: int) -> str:
    """The asset holding generation g's text (0: the raw corpus)."""
    if g < 0:
        raise ValueError(f"generation must be >= 0, got {g}")
    if g == 0:
        return RAW
    return EDITED if g == 1 else f"{EDITED}_g{g}"


def scores_asset(g: int) -> str:
    """The asset holding the prior's scores of generation g's text (0: token_scores, of the raw corpus)."""
    if g < 0:
        raise ValueError(f"generation must be >= 0, got {g}")
    return SCORES if g == 0 else f"{SCORES}_g{g}"


def variant(g: int) -> str:
    """distribution_health's name for generation g: raw, edited (generation 1), edited_g2, edited_g3, ..."""
    return "raw" if g == 0 else "edited" if g == 1 else f"edited_g{g}"


def generation_of(asset: str) -> int | None:
    """The generation whose text an edited_corpus* asset holds, or whose text a token_scores* asset scores."""
    m = _NAME_RE.match(asset)
    if not m:
        return None
    if m.group(2):
        return int(m.group(2))
    return 0 if m.group(1) == SCORES else 1


def later_assets(generations: int) -> list[str]:
    """The assets beyond raw_corpus -> token_scores -> edited_corpus, in dependency order.

    Empty for one generation; for N >= 2: token_scores_g1, edited_corpus_g2, token_scores_g2, ...,
    edited_corpus_gN, token_scores_gN.
    """
    if generations < 2:
        return []
    out = [scores_asset(1)]
    for g in range(2, generations + 1):
        out += [text_asset(g), scores_asset(g)]
    return out


def scored_generations(generations: int) -> list[int]:
    """Generations whose text is scored by the prior (besides the raw text): every one when N >= 2."""
    return list(range(1, generations + 1)) if generations >= 2 else []


# The generation an edited_corpus* file holds, from its lake path: edited_corpus (1), edited_corpus_g{g}.
_EDITED_VARIANT_SQL = (
    "CASE WHEN regexp_matches(filename, '/edited_corpus_g[0-9]+/shard=[^/]*/[^/]*$') "
    "THEN 'edited_g' || regexp_extract(filename, '/edited_corpus_g([0-9]+)/shard=[^/]*/[^/]*$', 1) ELSE 'edited' END"
)
# The generation whose text a token_scores_g{g} file scores.
_SCORES_VARIANT_SQL = (
    "CASE WHEN regexp_extract(filename, '/token_scores_g([0-9]+)/shard=[^/]*/[^/]*$', 1) = '1' THEN 'edited' "
    "ELSE 'edited_g' || regexp_extract(filename, '/token_scores_g([0-9]+)/shard=[^/]*/[^/]*$', 1) END"
)


def refresh_generation_views(con, home, shards, generations: int) -> list[str]:
    """Views of every generation for distribution_health and for people: returns the names made.

    One view per later asset (edited_corpus_g2, token_scores_g1, ...), plus
    edited_generations (variant, shard, doc_id, n_tokens, n_scored, ...: every generation's edited rows) and
    generation_scores (variant, shard, doc_id, pos, logprob: the prior's scores of each scored generation).
    Only generations up to `generations` are shown: files of an earlier, longer run stay out of the numbers.
    """
    from tledit_pipeline.database import refresh_views, sql_list, view_path
    from tledit_pipeline.health import EDITED_GENERATIONS_DDL, GENERATION_SCORES_DDL
    from tledit_pipeline.lake import is_shard_key, partition_file

    made = refresh_views(con, home, shards, views=later_assets(generations))

    def files(asset: str) -> list[str]:
        paths = [partition_file(home, asset, s).absolute() for s in sorted(shards) if is_shard_key(s)]
        return [view_path(home, p) for p in paths if p.exists()]  # relative to a local home, or a store's URL

    edited = [f for g in range(1, generations + 1) for f in files(text_asset(g))]
    scored = [f for g in scored_generations(generations) for f in files(scores_asset(g))]
    con.execute("DROP VIEW IF EXISTS edited_generations")
    con.execute("DROP VIEW IF EXISTS generation_scores")
    if edited:
        con.execute(
            f"CREATE VIEW edited_generations AS SELECT {_EDITED_VARIANT_SQL} AS variant, * EXCLUDE (filename) "
            f"FROM read_parquet({sql_list(edited)}, filename = true, hive_partitioning = false, union_by_name = true)"
        )
    else:
        con.execute(EDITED_GENERATIONS_DDL)
    if scored:
        con.execute(
            f"CREATE VIEW generation_scores AS SELECT {_SCORES_VARIANT_SQL} AS variant, shard, doc_id, pos, logprob "
            f"FROM read_parquet({sql_list(scored)}, filename = true, hive_partitioning = false)"
        )
    else:
        con.execute(GENERATION_SCORES_DDL)
    return made + ["edited_generations", "generation_scores"]
