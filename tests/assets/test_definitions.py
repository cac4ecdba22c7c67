"""The code location loads the way `dagster dev` and the webserver load it."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_workspace_validates():
    dagster = Path(sys.executable).parent / "dagster"
    out = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr


def test_graph_shape():
    from assets.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "raw_corpus",
        "token_scores",
        "edited_corpus",
        "synthetic_corpus",
        "ngram_profile",
        "distribution_health",
        "collapse_probe",
        "sweep_edited",
        "edit_sweep",
    }
    assert graph.get(dg.AssetKey("synthetic_corpus")).parent_keys == {dg.AssetKey("raw_corpus")}
    assert graph.get(dg.AssetKey("edited_corpus")).parent_keys == {dg.AssetKey("raw_corpus"), dg.AssetKey("token_scores")}
    assert graph.get(dg.AssetKey("distribution_health")).partitions_def is None
    # The collapse probe (opt-in to run, always in the graph) reads the corpus variants, unpartitioned.
    probe = graph.get(dg.AssetKey("collapse_probe"))
    assert probe.partitions_def is None
    assert probe.parent_keys == {dg.AssetKey("raw_corpus"), dg.AssetKey("edited_corpus"), dg.AssetKey("synthetic_corpus")}
    assert graph.get(dg.AssetKey("token_scores")).partitions_def.name == "shards"
    # The edit sweep (tledit sweep): one partition per (point, shard), read from the shard's scores and counts.
    sweep = graph.get(dg.AssetKey("sweep_edited"))
    assert sweep.partitions_def.partition_dimension_names == ["point", "shard"]
    assert sweep.parent_keys == {dg.AssetKey(a) for a in ("raw_corpus", "token_scores", "ngram_profile")}
    assert graph.get(dg.AssetKey("edit_sweep")).parent_keys == {dg.AssetKey("sweep_edited")}
