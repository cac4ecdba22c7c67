"""The whole graph with the source and the lake on a real S3-compatible server (moto's, on 127.0.0.1).

`tledit run --source s3://... --home s3://...`: raw, scores, edited, synthetic, n-grams, health and the
DuckDB file land on the server; the Dagster home stays local. `tledit export --out s3://...` writes there
too. Then a threshold backfill (the model is never loaded) and a changed object that refreshes only its
own shard.
"""

from __future__ import annotations

import gzip
import io
import json

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from assets.cli import main
from tests.assets.test_staleness import _forbid_the_model
from tledit_pipeline.database import DUCKDB_FILE
from tledit_pipeline.lake import DATA_FILE
from tledit_pipeline.settings import Settings

PER_SHARD = ("raw_corpus", "rejected_documents", "token_scores", "edited_corpus", "synthetic_corpus", "ngram_profile")


def _run(*args: str) -> int:
    return main(["run", *args])


@pytest.fixture
def on_s3(s3, small_source, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))  # cmd_run points it at the local instance
    source = s3.upload_folder(small_source, "corpus")
    home = s3.url("runs/one")
    flags = ["--home", home, "--source", source, "--model", str(tiny_model_dir)]
    return s3, source, home, flags


@pytest.mark.slow
def test_whole_graph_backfill_and_changed_object_on_the_server(on_s3, tmp_path, capsys, monkeypatch):
    s3, source, home, flags = on_s3
    assert _run(*flags, "--threshold", "0.2") == 0
    out = capsys.readouterr().out
    assert "ToEdit run complete" in out and "5 accepted, 0 rejected" in out and f"{home}/{DUCKDB_FILE}" in out

    keys = s3.keys("runs/one")
    for asset in PER_SHARD:
        for shard in ("alpha", "beta"):
            assert f"runs/one/lake/{asset}/shard={shard}/{DATA_FILE}" in keys
    assert f"runs/one/{DUCKDB_FILE}" in keys and "runs/one/settings.json" in keys
    assert not [k for k in keys if k.endswith(".tmp") or "dagster" in k]  # no temporaries; the instance is local

    # The Dagster instance is on this machine, under the state folder, and knows both shards.
    settings = Settings.from_env({"TLEDIT_HOME": home})
    assert settings.instance_dir.is_relative_to(tmp_path / "state")
    instance = dg.DagsterInstance.from_config(str(settings.instance_dir))
    for asset in ("raw_corpus", "token_scores", "edited_corpus", "synthetic_corpus", "ngram_profile"):
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {"alpha", "beta"}
    raw_version = instance.get_latest_materialization_event(dg.AssetKey("raw_corpus")).asset_materialization.tags
    assert len(raw_version["dagster/data_version"]) == 16  # a content hash, not an ETag (32 hex digits)

    # The uploaded DuckDB file holds the health table; its views read the lake on the server (fsspec).
    local = tmp_path / "copy.duckdb"
    local.write_bytes(s3.fs.cat_file(f"{s3.bucket}/runs/one/{DUCKDB_FILE}"))
    with duckdb.connect(str(local), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM distribution_health WHERE shard = '__all__'").fetchone()[0] > 10
        sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'edited_corpus'").fetchone()[0]
    assert f"s3://{s3.bucket}/runs/one/lake/edited_corpus/shard=alpha/{DATA_FILE}" in sql
    assert main(["health", "--home", home]) == 0
    assert "tail_coverage" in capsys.readouterr().out

    # Every document is in the lake, byte for byte where nothing changed.
    raw = pq.read_table(io.BytesIO(s3.fs.cat_file(f"{s3.bucket}/runs/one/lake/raw_corpus/shard=beta/{DATA_FILE}")))
    assert raw.column("text").to_pylist()[1] == "Is this a dagger which I see before me?"

    # Export to the store: one object per shard, the source's schema, each in its own format.
    assert main(["export", "--home", home, "--source", source, "--out", s3.url("export")]) == 0
    exported = s3.objects("export")
    assert sorted(exported) == ["alpha.jsonl", "beta.jsonl.gz"]
    rows = [json.loads(line) for line in exported["alpha.jsonl"].decode().splitlines()]
    assert [r["n"] for r in rows] == [1, 2, 3] and set(rows[0]) == {"text", "lang", "n"}
    assert [json.loads(line)["lang"] for line in gzip.decompress(exported["beta.jsonl.gz"]).decode().splitlines()] == ["en"] * 2

    # Nothing left to do: a second run plans no work and rebuilds nothing.
    assert _run(*flags, "--threshold", "0.2") == 0
    assert "plan: 0 of 2 shard(s) missing or stale" in capsys.readouterr().out

    # (One test, not three: every `tledit run` of the graph costs seconds.)
    _threshold_backfill_then_a_changed_object(s3, flags, capsys, monkeypatch, tmp_path)


def _threshold_backfill_then_a_changed_object(s3, flags, capsys, monkeypatch, tmp_path):
    scores_before = s3.objects("runs/one/lake/token_scores")
    edited_before = s3.objects("runs/one/lake/edited_corpus")

    # A threshold change re-edits from the stored scores: loading the model would fail the run. Its health is
    # built in a process of its own (as for a large corpus), which reads the lake on the server too.
    with monkeypatch.context() as m:
        step_process_ran = _forbid_the_model(m, tmp_path / "forbid")
        assert _run(*flags, "--threshold", "0.1", "--apart-from-shards", "0") == 0
        assert step_process_ran.exists()
    out = capsys.readouterr().out
    assert "plan: 2 of 2 shard(s) missing or stale" in out
    assert "materialized    edited_corpus x2, ngram_profile x2, distribution_health" in out
    assert s3.objects("runs/one/lake/token_scores") == scores_before
    assert s3.objects("runs/one/lake/edited_corpus") != edited_before

    # One object changes on the server: only its shard is redone (from raw_corpus on).
    changed = b'{"text": "Out, damned spot! out, I say!", "lang": "en", "n": 9}\n'
    s3.fs.pipe_file(f"{s3.bucket}/corpus/alpha.jsonl", changed)
    beta_scores = s3.objects("runs/one/lake/token_scores/shard=beta")
    assert _run(*flags, "--threshold", "0.1") == 0
    out = capsys.readouterr().out
    assert "plan: 1 of 2 shard(s) missing or stale" in out and "alpha: materializing raw_corpus" in out
    assert "source file alpha.jsonl changed" in out
    assert s3.objects("runs/one/lake/token_scores/shard=beta") == beta_scores
    raw = pq.read_table(io.BytesIO(s3.fs.cat_file(f"{s3.bucket}/runs/one/lake/raw_corpus/shard=alpha/{DATA_FILE}")))
    assert raw.column("text").to_pylist() == ["Out, damned spot! out, I say!"]
