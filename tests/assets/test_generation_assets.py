"""Iterative generations through Dagster: an asset per generation, every generation's health rows, export."""

import json

import dagster as dg
import pytest

from assets.cli import main
from assets.definitions import build_defs
from tledit_pipeline.database import connect
from tledit_pipeline.health import GENERATION_METRICS
from tledit_pipeline.lake import read_partition
from tledit_pipeline.settings import Settings

GEN_METRICS = GENERATION_METRICS + tuple(f"prob_bin_{i:02d}" for i in range(10))


def test_graph_has_an_asset_per_generation(tmp_path, small_source, tiny_model_dir):
    s = Settings(home=tmp_path, source=str(small_source), model=str(tiny_model_dir), generations=3)
    graph = build_defs(s).resolve_asset_graph()
    parents = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys} for k in graph.get_all_asset_keys()}
    assert parents["token_scores_g1"] == {"edited_corpus"}
    assert parents["edited_corpus_g2"] == {"edited_corpus", "token_scores_g1"}
    assert parents["token_scores_g2"] == {"edited_corpus_g2"}
    assert parents["edited_corpus_g3"] == {"edited_corpus_g2", "token_scores_g2"}
    assert parents["token_scores_g3"] == {"edited_corpus_g3"}
    assert {"edited_corpus_g2", "edited_corpus_g3"} <= parents["ngram_profile"]
    assert {"token_scores_g1", "token_scores_g2", "token_scores_g3", "edited_corpus_g3"} <= parents["distribution_health"]
    for name in ("token_scores_g1", "token_scores_g3"):
        assert graph.get(dg.AssetKey(name)).partitions_def.name == "shards"
    # One generation: the graph of a plain run, nothing to score after editing.
    one = {k.to_user_string() for k in build_defs(s.with_overrides(generations=1)).resolve_asset_graph().get_all_asset_keys()}
    assert not any("_g" in name for name in one)


def _health_table(out: str) -> dict[str, dict[str, str]]:
    """`tledit health` as {variant: {metric: cell}} (fixed-width columns, blank where a variant has no value)."""
    lines = out.splitlines()
    header = lines[1].split()
    width = len(lines[1]) - len("  ".join(f"{c:>12}" for c in header[1:])) - 2
    table: dict[str, dict[str, str]] = {v: {} for v in header[1:]}
    for line in lines[2:]:
        metric = line[:width].strip()
        cells = [line[width + 2 + 14 * i : width + 2 + 14 * i + 12].strip() for i in range(len(header) - 1)]
        for v, c in zip(header[1:], cells, strict=True):
            table[v][metric] = c
    return table


@pytest.mark.slow
def test_three_generations_end_to_end(tmp_path, small_source, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    run = [
        "run",
        "--home",
        str(home),
        "--source",
        str(small_source),
        "--model",
        str(tiny_model_dir),
        "--generations",
        "3",
        # The random tiny prior is unsure of everything (after the start token its best is P = 0.0025): a low p
        # and exclude-original give every generation work to do.
        "--threshold",
        "0.002",
        "--exclude-original",
        "--min-tail-coverage",
        "0",
        "--max-js-divergence",
        "1",
        "--synthetic-sample",
        "1.0",
        "--max-new-tokens",
        "8",
    ]
    assert main(run) == 0
    out = capsys.readouterr().out
    assert "generations     3" in out

    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    for asset in ("token_scores_g1", "edited_corpus_g2", "token_scores_g2", "edited_corpus_g3", "token_scores_g3"):
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {"alpha", "beta"}, asset
    ev = instance.get_latest_materialization_event(dg.AssetKey("distribution_health")).asset_materialization
    assert "](data:image/svg+xml;base64," in ev.metadata["generations"].value
    assert "| 3 | edited_g3 |" in ev.metadata["generations"].value

    con = connect(home)
    have = {(v, m) for v, m in con.execute("SELECT variant, metric FROM distribution_health WHERE shard = '__all__'").fetchall()}
    for variant in ("edited", "edited_g2", "edited_g3"):
        for metric in GEN_METRICS:
            assert (variant, metric) in have, (variant, metric)
    # Each generation edits the one before it: documents kept one for one, text moving further from raw.
    texts = {
        v: dict(con.execute(f"SELECT doc_id, text FROM {v} ORDER BY doc_id").fetchall())  # noqa: S608 (constant names)
        for v in ("raw_corpus", "edited_corpus", "edited_corpus_g2", "edited_corpus_g3")
    }
    assert all(set(t) == set(texts["raw_corpus"]) for t in texts.values())
    assert texts["edited_corpus_g2"] != texts["edited_corpus"] != texts["raw_corpus"]
    changed = dict(
        con.execute(
            "SELECT variant, value FROM distribution_health WHERE shard = '__all__' AND metric = 'changed_share'"
        ).fetchall()
    )
    assert all(changed[v] > 0 for v in ("edited", "edited_g2", "edited_g3"))
    # Generation g is scored on generation g-1's text: its eligible tokens are token_scores_g{g-1}'s.
    g2_eligible = con.execute("SELECT sum(n_eligible) FROM edited_corpus_g2").fetchone()[0]
    assert g2_eligible == con.execute("SELECT count(*) FROM token_scores_g1 WHERE whole AND logprob >= ln(0.002)").fetchone()[0]
    con.close()

    assert main(["health", "--home", str(home)]) == 0
    table = _health_table(capsys.readouterr().out)
    assert list(table) == ["raw", "edited", "edited_g2", "edited_g3", "synthetic", "raw_matched"]
    for v in ("edited", "edited_g2", "edited_g3"):
        assert table[v]["ppl_p50"] and table[v]["eligible_share"] and table[v]["prob_bin_099"]

    # Nothing changed: nothing is redone, later generations included.
    assert main(["run", "--home", str(home)]) == 0
    assert "plan: 0 of 2 shard(s) missing or stale" in capsys.readouterr().out

    # `tledit export --generation g` writes generation g's text in the source's schema.
    for g, asset in ((2, "edited_corpus_g2"), (3, "edited_corpus_g3")):
        target = tmp_path / f"export{g}"
        assert main(["export", "--home", str(home), "--out", str(target), "--generation", str(g)]) == 0
        assert f"exported 5 generation {g} edited documents" in capsys.readouterr().out
        rows = [json.loads(x) for x in (target / "alpha.jsonl").read_text().splitlines()]  # the shard's own format
        want = read_partition(home, asset, "alpha").column("text").to_pylist()  # source order
        assert [r["text"] for r in rows] == want and list(rows[0]) == ["text", "lang", "n"]
    assert main(["export", "--home", str(home), "--out", str(tmp_path / "x"), "--generation", "4"]) == 2
    assert "generations 1..3" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--generations", "TLEDIT_GENERATIONS"])
def test_generations_setting(tmp_path, flag, monkeypatch):
    if flag.startswith("TLEDIT"):
        monkeypatch.setenv(flag, "4")
        assert Settings.load(home=str(tmp_path)).generations == 4
    else:
        import argparse

        from assets.cli import _settings

        ns = argparse.Namespace(home=str(tmp_path), generations=4)
        assert _settings(ns).generations == 4
    with pytest.raises(Exception, match="generations must be >= 1"):
        Settings(home=tmp_path, generations=0)
