"""Iterative generations: asset names, the views over every generation, and their health rows."""

from __future__ import annotations

import math

import duckdb
import pyarrow as pa
import pytest

from tledit_pipeline.database import refresh_views
from tledit_pipeline.generations import (
    generation_of,
    later_assets,
    refresh_generation_views,
    scored_generations,
    scores_asset,
    text_asset,
    variant,
)
from tledit_pipeline.health import GENERATION_METRICS, build_health_table, generation_table, ordered_variants
from tledit_pipeline.lake import write_partition
from tledit_pipeline.ngrams import profile
from tledit_pipeline.synthetic import SYNTHETIC_SCHEMA


def test_names_of_each_generation():
    assert [text_asset(g) for g in range(4)] == ["raw_corpus", "edited_corpus", "edited_corpus_g2", "edited_corpus_g3"]
    assert [scores_asset(g) for g in range(4)] == ["token_scores", "token_scores_g1", "token_scores_g2", "token_scores_g3"]
    assert [variant(g) for g in range(4)] == ["raw", "edited", "edited_g2", "edited_g3"]
    assert later_assets(1) == [] and scored_generations(1) == []
    assert later_assets(3) == ["token_scores_g1", "edited_corpus_g2", "token_scores_g2", "edited_corpus_g3", "token_scores_g3"]
    assert scored_generations(3) == [1, 2, 3]
    for g in range(6):
        assert generation_of(text_asset(g)) == (g if g else None) and generation_of(scores_asset(g)) == g
    assert generation_of("ngram_profile") is None
    assert ordered_variants({"raw_matched", "edited_g10", "edited_g2", "synthetic", "raw", "edited"}) == [
        "raw",
        "edited",
        "edited_g2",
        "edited_g10",
        "synthetic",
        "raw_matched",
    ]


def _edited(shard, n_scored, n_eligible, n_changed, n_deleted):
    return pa.table(
        {
            "shard": [shard],
            "doc_id": ["x"],
            "text": ["a b c"],
            "n_tokens": pa.array([n_scored], pa.int32()),
            "n_scored": pa.array([n_scored], pa.int32()),
            "n_eligible": pa.array([n_eligible], pa.int32()),
            "n_changed": pa.array([n_changed], pa.int32()),
            "n_deleted": pa.array([n_deleted], pa.int32()),
        }
    )


def _scores(shard, probs):
    return pa.table(
        {
            "shard": [shard] * len(probs),
            "doc_id": ["x"] * len(probs),
            "pos": pa.array(range(len(probs)), pa.int32()),
            "logprob": pa.array([math.log(p) for p in probs], pa.float32()),
        }
    )


@pytest.fixture
def lake(tmp_path):
    """A shard's lake after three generations (one generation-3 file left over from an earlier run too)."""
    home = tmp_path / "home it's"  # a path that needs quoting
    write_partition(home, "raw_corpus", "s1", pa.table({"shard": ["s1"], "doc_id": ["x"], "text": ["a b c"]}))
    write_partition(home, "token_scores", "s1", _scores("s1", [0.5, 0.995, 0.995, 0.05]))
    write_partition(
        home,
        "synthetic_corpus",
        "s1",
        pa.table(
            {
                "shard": ["s1"],
                "doc_id": ["x"],
                "prefix_tokens": pa.array([1], pa.int32()),
                "new_tokens": pa.array([1], pa.int32()),
                "pieces": pa.array([[{"start": 0, "prefix": 1, "target": 1, "new": 1}]], SYNTHETIC_SCHEMA.field("pieces").type),
                "logprobs": pa.array([[math.log(0.9)]], pa.list_(pa.float32())),
                "text": ["a z"],
                "reference_text": ["a b"],
            }
        ),
    )
    write_partition(home, "edited_corpus", "s1", _edited("s1", 4, 2, 1, 0))
    write_partition(home, "token_scores_g1", "s1", _scores("s1", [0.5, 0.995, 0.25, 0.05]))
    write_partition(home, "edited_corpus_g2", "s1", _edited("s1", 4, 1, 1, 1))
    write_partition(home, "token_scores_g2", "s1", _scores("s1", [0.5, 0.25, 0.25, 0.25]))
    write_partition(home, "edited_corpus_g3", "s1", _edited("s1", 4, 0, 0, 0))
    write_partition(home, "token_scores_g3", "s1", _scores("s1", [0.5, 0.5, 0.5, 0.5]))
    return home


def _health(home, generations):
    con = duckdb.connect()
    refresh_views(con, home, ["s1"])
    made = refresh_generation_views(con, home, ["s1"], generations)
    con.register(
        "ngram_profile",
        profile(
            "s1", {"raw": ["a b c"], "edited": ["a b d"], "edited_g2": ["a x d"], "synthetic": ["a z"], "raw_matched": ["a b"]}
        ).to_arrow(),
    )
    health = build_health_table(con)
    return con, made, {(r["variant"], r["shard"], r["metric"]): r["value"] for r in health.iter_rows(named=True)}, health


def test_every_generation_gets_every_metric(lake):
    con, made, v, health = _health(lake, 2)
    assert {"token_scores_g1", "edited_corpus_g2", "token_scores_g2", "edited_generations", "generation_scores"} <= set(made)
    assert "edited_corpus_g3" not in made  # generations = 2: the leftover third generation stays out
    assert {r[0] for r in con.execute("SELECT DISTINCT variant FROM edited_generations").fetchall()} == {"edited", "edited_g2"}
    assert {r[0] for r in con.execute("SELECT DISTINCT variant FROM generation_scores").fetchall()} == {"edited", "edited_g2"}
    for name in ("edited", "edited_g2"):
        for metric in GENERATION_METRICS + tuple(f"prob_bin_{i:02d}" for i in range(10)):
            assert (name, "__all__", metric) in v, (name, metric)
    assert v[("edited", "__all__", "eligible_share")] == pytest.approx(2 / 4)
    assert v[("edited_g2", "__all__", "eligible_share")] == pytest.approx(1 / 4)
    assert v[("edited_g2", "s1", "deleted_share")] == pytest.approx(1 / 4)
    # Token probabilities and perplexity of each generation's own text (token_scores_g{g}).
    assert v[("edited", "__all__", "prob_bin_099")] == pytest.approx(1 / 4)
    assert v[("edited_g2", "__all__", "prob_bin_099")] == pytest.approx(0.0)
    assert v[("edited_g2", "__all__", "ppl_p50")] == pytest.approx(math.exp(-(math.log(0.5) + 3 * math.log(0.25)) / 4), rel=1e-5)
    assert v[("raw", "__all__", "prob_bin_099")] == pytest.approx(2 / 4)
    table = generation_table(health)
    assert table["generation"].to_list() == [0, 1, 2] and table["variant"].to_list() == ["raw", "edited", "edited_g2"]
    assert table["eligible_share"].to_list()[1:] == pytest.approx([0.5, 0.25])


def test_three_generations_and_one(lake):
    _, _, v, _ = _health(lake, 3)
    assert v[("edited_g3", "__all__", "ppl_p50")] == pytest.approx(2.0, rel=1e-5)
    assert v[("edited_g3", "__all__", "eligible_share")] == 0.0
    # One generation: nothing after edited_corpus is read, so edited has its shares but no perplexity.
    _, made, v1, _ = _health(lake, 1)
    assert "token_scores_g1" not in made
    assert ("edited", "__all__", "eligible_share") in v1 and ("edited", "__all__", "ppl_p50") not in v1
    assert not any(k[0] == "edited_g2" and k[2] == "eligible_share" for k in v1)
