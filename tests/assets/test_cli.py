"""`tledit run` end to end, in process, against a persistent instance under a temporary home."""

import dagster as dg
import duckdb

from assets.cli import main


def test_run_materializes_every_shard_and_prints_a_summary(tmp_path, small_source, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))  # restored after the test
    home = tmp_path / "home"
    code = main(["run", "--home", str(home), "--source", str(small_source), "--model", str(tiny_model_dir), "--threshold", "0.9"])
    out = capsys.readouterr().out
    assert code == 0
    assert "ToEdit run complete" in out and "shards          2" in out and "5 accepted, 0 rejected" in out
    assert str(home / "tledit.duckdb") in out and "make ui" in out

    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    assert sorted(instance.get_dynamic_partitions("shards")) == ["alpha", "beta"]
    for asset in ("raw_corpus", "token_scores", "edited_corpus", "ngram_profile"):
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {"alpha", "beta"}
    assert instance.get_latest_materialization_event(dg.AssetKey("distribution_health")) is not None

    con = duckdb.connect(str(home / "tledit.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM edited_corpus").fetchone()[0] == 5


def test_unknown_source_is_a_clear_error(tmp_path, capsys):
    code = main(["run", "--home", str(tmp_path), "--source", str(tmp_path / "missing")])
    assert code == 2
    assert "is not a folder, file or glob that exists" in capsys.readouterr().err


def test_bad_setting_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--home", str(tmp_path), "--threshold", "1.5"]) == 2
    assert "threshold p must be in (0, 1]" in capsys.readouterr().err


def test_unsupported_single_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "data.csv").write_text("text\nhello\n")
    assert main(["run", "--home", str(tmp_path / "home"), "--source", str(tmp_path / "data.csv")]) == 2
    assert "data.csv is not a .jsonl, .jsonl.gz, .parquet or .txt file" in capsys.readouterr().err


def test_a_bad_shard_does_not_stop_the_others(tmp_path, small_source, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    (small_source / "gamma.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00 not gzip data")  # unreadable as a whole
    (small_source / "empty-texts.jsonl").write_text('{"text": ""}\n{"text": null}\n{"other": 1}\n')
    home = tmp_path / "home"
    code = main(["run", "--home", str(home), "--source", str(small_source), "--model", str(tiny_model_dir)])
    captured = capsys.readouterr()
    assert code == 2
    assert "1 of 4 shard(s) failed" in captured.err and "gamma.jsonl.gz" in captured.err
    # The good shards, and the one whose every row was rejected, are done; health covers them.
    assert "shards          3" in captured.out and "5 accepted, 3 rejected" in captured.out
    con = duckdb.connect(str(home / "tledit.duckdb"), read_only=True)
    reasons = sorted(r[0] for r in con.execute("SELECT reason FROM rejected_documents").fetchall())
    assert reasons == ["field 'text' is empty or whitespace only", "field 'text' is null", "no field 'text'"]
    assert con.execute("SELECT count(DISTINCT shard) FROM distribution_health WHERE shard <> '__all__'").fetchone()[0] >= 2


def test_flags_are_remembered_for_the_ui_and_the_next_run(tmp_path, small_source, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    assert main(["run", "--home", str(home), "--source", str(small_source), "--model", str(tiny_model_dir), "--threshold", "0.5"]) == 0
    from assets.definitions import build_defs

    monkeypatch.setenv("TLEDIT_HOME", str(home))
    defs = build_defs()  # what `make ui` loads: no flags, only the data directory
    settings = defs.resources["tledit"].settings()
    assert (settings.source, settings.model, settings.edit.threshold) == (str(small_source), str(tiny_model_dir), 0.5)
