"""Two partition runs at once, in two processes on one data directory: no DuckDB lock errors.

Partition assets write parquet only; distribution_health rebuilds the DuckDB file under a new name and
renames it into place, so concurrent runs (and readers) never contend for DuckDB's lock.
"""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from tledit_pipeline.database import connect

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_concurrent_runs_on_different_shards(tmp_path, small_source, tiny_model_dir):
    home = tmp_path / "home"
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("DAGSTER_HOME", None)
    base = [
        sys.executable,
        "-m",
        "assets.cli",
        "run",
        "--home",
        str(home),
        "--source",
        str(small_source),
        "--model",
        str(tiny_model_dir),
        "--threshold",
        "0.5",
    ]
    procs = [
        subprocess.Popen(base + ["--shard", key], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for key in ("alpha", "beta")
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        assert "lock" not in (out + err).lower()
        assert "ToEdit run complete" in out
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    for asset in ("raw_corpus", "token_scores", "edited_corpus", "ngram_profile"):
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {"alpha", "beta"}
    assert not list(home.glob(".tledit.duckdb.*"))  # no temporary database left behind
    con = connect(home)
    # The later of the two health builds saw both shards, or a plain run completes it.
    shards = {r[0] for r in con.execute("SELECT DISTINCT shard FROM edited_corpus").fetchall()}
    con.close()
    assert shards <= {"alpha", "beta"} and shards


def test_partition_assets_never_open_the_duckdb_file(tmp_path, small_source, tiny_model_dir, monkeypatch):
    """Every per-shard asset and check runs with the DuckDB file forbidden (an in-memory DuckDB over one
    partition's parquet, as ngram_profile's metrics use, takes no lock)."""
    from assets.checks import CHECKS
    from assets.definitions import PER_SHARD, build_assets, build_resources
    from tledit_pipeline.settings import Settings

    in_memory = duckdb.connect

    def refuse(database=":memory:", *a, **k):
        if str(database) not in ("", ":memory:"):
            raise AssertionError("a partition step opened DuckDB")
        return in_memory(database, *a, **k)

    monkeypatch.setattr(duckdb, "connect", refuse)
    settings = Settings(home=tmp_path / "home", source=str(small_source), model=str(tiny_model_dir))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["alpha"])
        result = dg.materialize(
            [*build_assets(settings), *CHECKS],
            selection=PER_SHARD,
            partition_key="alpha",
            instance=instance,
            resources=build_resources(settings),
        )
        assert result.success
    assert not (settings.home / "tledit.duckdb").exists()
