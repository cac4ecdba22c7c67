"""reference_perplexity: every variant scored alike by a reference model, labelled with it (opt-in)."""

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.cli import main
from assets.definitions import build_defs
from tledit_pipeline.database import connect
from tledit_pipeline.lake import partition_file
from tledit_pipeline.settings import Settings


def test_no_reference_no_asset(tmp_path):
    keys = build_defs(Settings.from_env(env={}, home=str(tmp_path))).resolve_asset_graph().get_all_asset_keys()
    assert dg.AssetKey("reference_perplexity") not in keys


@pytest.mark.slow
def test_reference_scores_every_variant_alike(tmp_path, small_source, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    base = ["run", "--home", str(home), "--source", str(small_source), "--model", str(tiny_model_dir)]
    assert main([*base, "--reference-model", "prior"]) == 0
    assert "reference_perplexity: scoring every variant with prior  (reference_perplexity missing)" in capsys.readouterr().out
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    md = instance.get_latest_materialization_event(dg.AssetKey("reference_perplexity")).asset_materialization.metadata
    assert md["scored_by"].value == f"{tiny_model_dir} (the prior)"
    assert f"scored by {tiny_model_dir} (the prior)" in md["perplexity_by_reference"].value
    rows = pq.read_table(partition_file(home, "reference_perplexity", "beta")).to_pylist()
    assert {r["variant"] for r in rows} == {"raw", "edited", "synthetic", "raw_matched"}
    # Raw text teacher-forced by the prior itself: the same perplexity distribution_health has from token_scores.
    con = connect(home)
    raw_p50 = con.execute(
        "SELECT value FROM distribution_health WHERE variant = 'raw' AND shard = '__all__' AND metric = 'ppl_p50'"
    ).fetchone()[0]
    con.close()
    assert md["raw/ppl_p50"].value == pytest.approx(raw_p50, rel=1e-3)
    assert main([*base, "--reference-model", "prior"]) == 0
    assert "reference_perplexity: up to date" in capsys.readouterr().out
