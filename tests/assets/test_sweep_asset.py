"""`tledit sweep`: every point edited from stored scores without the prior, materialized per (point, shard)
with its lineage, measured like distribution_health; one table and one JSON line."""

import json

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.cli import main
from assets.definitions import build_defs
from assets.staleness import latest_materializations
from assets.sweep import SWEEP_POINTS, multi_key
from tests.assets.test_staleness import _forbid_the_model
from tledit_pipeline.database import connect
from tledit_pipeline.lake import partition_file, partition_meta, read_partition
from tledit_pipeline.settings import EditSettings, Settings
from tledit_pipeline.sweep import SWEEP_EDITED, pair_key, point_key


def _json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_sweep_is_model_free_with_lineage_and_one_json_line(tmp_path, small_source, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    run = ["run", "--home", str(home), "--source", str(small_source), "--model", str(tiny_model_dir)]
    assert main(run) == 0
    # Thresholds from the stored probabilities themselves (the tiny model's are low): each point edits more.
    con = connect(home)
    q = con.execute("SELECT quantile_disc(exp(logprob), [0.99, 0.9, 0.5, 0.2]) FROM token_scores WHERE whole").fetchone()[0]
    con.close()
    t = [float(f"{x:.2g}") for x in q]
    assert len(set(t)) == 4
    # A threshold backfill: the run's edit at the third point (the checks' bounds opened: the tiny model's edits are wild).
    assert main(run + ["--threshold", str(t[2]), "--min-tail-coverage", "0", "--max-js-divergence", "1"]) == 0
    capsys.readouterr()

    step_process_ran = _forbid_the_model(monkeypatch, tmp_path / "forbid")
    thresholds = ",".join(str(x) for x in (t[2], t[3], t[1], t[0]))  # in any order
    assert main(["sweep", "--home", str(home), "--thresholds", thresholds]) == 0
    out = capsys.readouterr().out
    assert not step_process_ran.exists()  # everything ran in this process, where the prior is refused
    assert "sweep: 4 point(s) over 2 shard(s), 4 missing or stale" in out
    assert out.count("[sweep ") == 1  # the four new points are one range: one run
    line = _json(out)
    points = [point_key(EditSettings(threshold=x)) for x in t]
    assert line["thresholds"] == t and line["points"] == points
    for m in ("changed_share", "tail_coverage", "js_divergence_vs_raw", "top64_share", "eligible_share"):
        assert len(line[m]) == 4 and all(isinstance(v, float) for v in line[m])
    assert line["eligible_share"] == sorted(line["eligible_share"])  # a lower p makes more tokens eligible
    assert line["changed_share"][-1] > line["changed_share"][0] > 0
    assert all(0 <= v <= 1 for v in line["tail_coverage"]) and line["raw"]["tail_coverage"] == 1.0

    # The point at the run's own threshold is the run's edited_corpus, byte for byte, and its shares.
    same = points[2]
    for shard in ("alpha", "beta"):
        assert (
            read_partition(home, SWEEP_EDITED, pair_key(same, shard))
            .column("text")
            .equals(read_partition(home, "edited_corpus", shard).column("text"))
        )
        assert (
            partition_meta(home, SWEEP_EDITED, pair_key(same, shard))["edit"]
            == partition_meta(home, "edited_corpus", shard)["edit"]
        )
    con = connect(home)
    changed = con.execute("SELECT sum(n_changed) / sum(n_scored) FROM edited_corpus").fetchone()[0]
    sweep_rows = con.execute("SELECT count(*) FROM edit_sweep WHERE shard = '__all__'").fetchone()[0]
    con.close()
    assert line["changed_share"][2] == pytest.approx(changed, abs=1e-6)
    assert sweep_rows > 0  # the DuckDB file has the sweep's table as a view

    # Lineage: one materialization per (point, shard), each recording its own settings; the shard dimension
    # depends on that shard's scores and raw counts.
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    assert sorted(instance.get_dynamic_partitions(SWEEP_POINTS)) == sorted(points)
    records = latest_materializations(instance, SWEEP_EDITED)
    assert len(records) == 8
    for p in points:
        for shard in ("alpha", "beta"):
            md = records[multi_key(p, shard)].asset_materialization.metadata
            assert md["edit_settings"].value == EditSettings(threshold=t[points.index(p)]).version()
            assert md["shard"].value == shard
    graph = build_defs(Settings.load(env={}, home=str(home))).resolve_asset_graph()
    parents = graph.get_parents_partitions(dg.AssetKey(SWEEP_EDITED), multi_key(points[0], "beta")).parent_partitions
    assert {(k.asset_key.to_user_string(), k.partition_key) for k in parents} >= {
        ("token_scores", "beta"),
        ("ngram_profile", "beta"),
    }
    health = instance.get_latest_materialization_event(dg.AssetKey("edit_sweep")).asset_materialization.metadata
    assert "data:image/svg+xml;base64," in health["sweep"].value and health["points"].value == 4

    # Again: nothing to do. One more threshold and top-p: only the new points, and the table covers them all.
    assert main(["sweep", "--home", str(home), "--thresholds", thresholds]) == 0
    out = capsys.readouterr().out
    assert "4 missing or stale" not in out and "0 missing or stale" in out and "[sweep " not in out
    assert _json(out)["changed_share"] == line["changed_share"]
    assert main(["sweep", "--home", str(home), "--thresholds", str(t[2]), "--top-ps", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "1 point(s) over 2 shard(s), 1 missing or stale" in out
    assert _json(out)["points"] == [point_key(EditSettings(threshold=t[2], strategy="top_p", top_p=0.5))]
    assert pq.read_table(partition_file(home, "edit_sweep", "all")).num_rows > 0


def test_sweep_before_any_run_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    assert main(["sweep", "--home", str(tmp_path / "empty"), "--thresholds", "0.9"]) == 2
    assert "run `tledit run` first" in capsys.readouterr().err
    assert main(["sweep", "--home", str(tmp_path / "empty"), "--thresholds", "0.9,x"]) == 2
    assert "--thresholds" in capsys.readouterr().err
