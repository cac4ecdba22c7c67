"""`tledit run` end to end, in process, against a persistent instance under a temporary home."""

import os

import dagster as dg
import pytest

from assets.cli import main
from tledit_pipeline.database import connect


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
    health = instance.get_latest_materialization_event(dg.AssetKey("distribution_health"))
    assert health is not None
    # 2 shards, below apart_from_shards: built in this process, with its checks, in the same instance
    # (test_staleness covers the spawned process of a large corpus).
    started = instance.all_logs(health.run_id, of_type=dg.DagsterEventType.STEP_START)
    assert len(started) == 3 and {e.dagster_event.pid for e in started} == {os.getpid()}
    checks = instance.all_logs(health.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    assert {e.dagster_event.event_specific_data.check_name for e in checks} == {
        "edited_health_overall",
        "synthetic_collapse_overall",
    }

    con = connect(home)
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
    assert (
        "data.csv is not a .jsonl, .json (each plain, .gz, .zst, .bz2 or .xz), .parquet, .txt or .arrow file"
        in capsys.readouterr().err
    )


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
    con = connect(home)
    reasons = sorted(r[0] for r in con.execute("SELECT reason FROM rejected_documents").fetchall())
    assert reasons == ["field 'text' is empty or whitespace only", "field 'text' is null", "no field 'text'"]
    assert con.execute("SELECT count(DISTINCT shard) FROM distribution_health WHERE shard <> '__all__'").fetchone()[0] >= 2


def test_flags_are_remembered_for_the_ui_and_the_next_run(tmp_path, small_source, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    assert (
        main(["run", "--home", str(home), "--source", str(small_source), "--model", str(tiny_model_dir), "--threshold", "0.5"])
        == 0
    )
    from assets.definitions import build_defs

    monkeypatch.setenv("TLEDIT_HOME", str(home))
    defs = build_defs()  # what `make ui` loads: no flags, only the data directory
    settings = defs.resources["tledit"].settings()
    assert (settings.source, settings.model, settings.edit.threshold) == (str(small_source), str(tiny_model_dir), 0.5)


def test_health_prints_the_whole_corpus_table(tmp_path, small_source, tiny_model_dir, capsys, monkeypatch):
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
        "--synthetic-sample",
        "1.0",
        "--max-new-tokens",
        "12",
        "--prefix-tokens",
        "4",
    ]
    assert main(run) == 0
    capsys.readouterr()
    assert main(["health", "--home", str(home)]) == 0
    out = capsys.readouterr().out.splitlines()
    header = out[1].split()
    assert header == ["metric", "raw", "edited", "synthetic", "raw_matched"]
    rows = {line.split()[0]: line.split()[1:] for line in out[2:]}
    for metric in ("tail_coverage", "js_divergence_vs_raw", "distinct_2", "top64_share", "hashed_effective_buckets", "ppl_p50"):
        assert metric in rows
    assert rows["tail_coverage"][0] == "1.0000" and rows["js_divergence_vs_raw"][0] == "0.0000"
    con = connect(home)
    want = con.execute(
        "SELECT value FROM distribution_health WHERE shard = '__all__' AND variant = 'synthetic' AND metric = 'top64_share'"
    ).fetchone()[0]
    assert rows["top64_share"][2] == f"{want:.4f}"
    # The flags were the baseline's settings for this run, and are remembered.
    assert con.execute("SELECT max(prefix_tokens), count(*) FROM synthetic_corpus").fetchone() == (4, 5)


def test_health_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert main(["health", "--home", str(tmp_path)]) == 2
    assert "run `tledit run` first" in capsys.readouterr().err


def test_field_edits_only_the_response_and_export_keeps_the_source_schema(tmp_path, tiny_model_dir, capsys, monkeypatch):
    import gzip
    import json

    import pyarrow.parquet as pq

    from tests.conftest import write_jsonl

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    src = tmp_path / "instructions"
    src.mkdir()
    rows = [
        {
            "id": f"q{i}",
            "prompt": f"Question {i}: what is fair?",
            "response": "Fair is foul, and foul is fair. " * 3,
            "text": "a clash",
            "n": i,
        }
        for i in range(3)
    ] + [{"id": "bad", "prompt": "no answer", "response": "", "text": "x", "n": 9}]
    write_jsonl(src / "chat.jsonl", rows)
    home = tmp_path / "home"
    # The random tiny prior's most confident token after the document-start token has P = 0.0025.
    code = main(
        [
            "run",
            "--home",
            str(home),
            "--source",
            str(src),
            "--model",
            str(tiny_model_dir),
            "--field",
            "response",
            "--threshold",
            "0.002",
            "--exclude-original",
            # A deliberately heavy edit: loosen the health checks that would (rightly) block it.
            "--min-tail-coverage",
            "0",
            "--max-js-divergence",
            "1",
        ]
    )
    assert code == 0
    capsys.readouterr()
    con = connect(home)
    changed = con.execute("SELECT sum(n_changed) FROM edited_corpus").fetchone()[0]
    con.close()

    out = tmp_path / "export"
    assert main(["export", "--home", str(home), "--out", str(out), "--format", "jsonl.gz"]) == 0
    assert "exported 3 edited documents from 1 shard(s)" in capsys.readouterr().out
    exported = [json.loads(line) for line in gzip.decompress((out / "chat.jsonl.gz").read_bytes()).decode().splitlines()]
    assert [list(r) for r in exported] == [["id", "prompt", "response", "text", "n"]] * 3  # the source's columns, in order
    assert [r["id"] for r in exported] == ["q0", "q1", "q2"]  # source order; the rejected row is not exported
    for src_row, r in zip(rows, exported):
        assert (r["prompt"], r["text"], r["n"]) == (src_row["prompt"], src_row["text"], src_row["n"])  # untouched
    assert changed > 0 and sum(r["response"] != src_row["response"] for src_row, r in zip(rows, exported)) > 0
    first = (out / "chat.jsonl.gz").read_bytes()
    assert main(["export", "--home", str(home), "--out", str(out), "--format", "jsonl.gz"]) == 0
    assert (out / "chat.jsonl.gz").read_bytes() == first  # same bytes on every export

    assert main(["export", "--home", str(home), "--out", str(out), "--format", "parquet"]) == 0
    table = pq.read_table(out / "chat.parquet")
    assert table.column_names == ["id", "prompt", "response", "text", "n"]
    assert table.column("response").to_pylist() == [r["response"] for r in exported]
    assert not list(out.glob(".*.tmp"))


def test_export_refuses_text_edited_with_other_settings(tmp_path, small_source, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    assert (
        main(["run", "--home", str(home), "--source", str(small_source), "--model", str(tiny_model_dir), "--shard", "alpha"]) == 0
    )
    capsys.readouterr()
    assert main(["export", "--home", str(home), "--out", str(tmp_path / "o"), "--shard", "beta"]) == 2
    assert "shard 'beta' has no raw_corpus; run `tledit run` first" in capsys.readouterr().err
    monkeypatch.setenv("TLEDIT_THRESHOLD", "0.5")
    assert main(["export", "--home", str(home), "--out", str(tmp_path / "o"), "--shard", "alpha"]) == 2
    assert "not the current p=0.5" in capsys.readouterr().err


def test_preview_shows_probabilities_eligible_tokens_and_the_edit(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    home = tmp_path / "home"
    text = "Fair is foul, and foul is fair: hover through the fog and filthy air."
    # The random tiny prior's most confident token after the document-start token has P = 0.0025.
    assert (
        main(["preview", text, "--home", str(home), "--model", str(tiny_model_dir), "--threshold", "0.002", "--exclude-original"])
        == 0
    )
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # not a terminal: plain markers, no colour
    assert "strategy=top_k,exclude_original" in out
    lines = out.splitlines()
    shown = lines[lines.index("original, with P(token | original prefix); * = eligible") + 1]
    assert shown.startswith("Fair[") and "*]" in shown
    import re

    assert re.sub(r"\[[-0-9.]+\*?\]", "", shown) == text  # every character once, each token with its P
    edited = lines[lines.index("edited") + 1]
    assert edited != text and "changes" in lines
    assert not (home / "dagster_home").exists()  # a preview stores nothing

    (tmp_path / "t.txt").write_text(text)
    assert main(["preview", "--file", str(tmp_path / "t.txt"), "--home", str(home), "--model", str(tiny_model_dir)]) == 0
    assert main(["preview", "--home", str(home)]) == 2
    assert "give the text to preview, or --file F" in capsys.readouterr().err


def test_preview_colours_a_terminal(tmp_path, tiny_model_dir, capsys, monkeypatch):
    from tledit_pipeline.preview import preview, render
    from tledit_pipeline.prior import cached_prior
    from tledit_pipeline.settings import Settings

    s = Settings(home=tmp_path, model=str(tiny_model_dir)).with_overrides(threshold=0.002)
    result = preview(cached_prior(s.model, str(s.models_dir), "cpu", "float32"), "Fair is foul, and foul is fair.", s)
    coloured = render(result, 0.002, colour=True)
    assert "\x1b[1;30;43m" in coloured and "[0." not in coloured
    assert result.n_changed <= result.n_eligible <= len(result.tokens)


@pytest.mark.slow
def test_a_model_that_cannot_load_fails_once_and_is_not_remembered(tmp_path, small_source, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    typo = tmp_path / "no-such-model"
    assert main(["run", "--home", str(home), "--source", str(small_source), "--model", str(typo)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"tledit: model folder {typo} does not exist"  # one line, no exception class
    assert not (home / "settings.json").exists() and not (home / "dagster_home").exists()
    # A run that used its settings successfully remembers them; a later failing one does not replace them.
    assert main(["run", "--home", str(home), "--source", str(small_source), "--model", str(tiny_model_dir)]) == 0
    assert main(["run", "--home", str(home), "--model", str(typo)]) == 2
    from tledit_pipeline.settings import Settings

    assert Settings.load(env={}, home=home).model == str(tiny_model_dir)


@pytest.mark.slow
def test_context_field_conditions_the_scores_and_only_the_response_changes(tmp_path, tiny_model_dir, capsys, monkeypatch):
    import gzip
    import json

    import numpy as np

    from tests.conftest import write_jsonl

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    src = tmp_path / "sft"
    src.mkdir()
    rows = [
        {
            "id": f"q{i}",
            "prompt": f"Question {i}: when shall we three meet again?",
            "response": "In thunder, lightning, or in rain. " * 2,
        }
        for i in range(3)
    ] + [{"id": "q3", "prompt": None, "response": "Fair is foul, and foul is fair."}]
    write_jsonl(src / "chat.jsonl", rows)
    common = [
        "--source",
        str(src),
        "--model",
        str(tiny_model_dir),
        "--field",
        "response",
        "--threshold",
        "0.0003",
        "--exclude-original",
        "--min-tail-coverage",
        "0",
        "--max-js-divergence",
        "1",
    ]
    with_ctx, alone = tmp_path / "with", tmp_path / "alone"
    assert main(["run", "--home", str(with_ctx), "--context-field", "prompt", *common]) == 0
    assert main(["run", "--home", str(alone), *common]) == 0
    capsys.readouterr()

    def scores(home):
        con = connect(home)
        out = con.execute(
            "SELECT doc_id, pos, token_id, char_start, char_end, logprob FROM token_scores ORDER BY doc_id, pos"
        ).fetchall()
        con.close()
        return out

    a, b = scores(with_ctx), scores(alone)
    assert [r[:5] for r in a] == [r[:5] for r in b]  # the response's tokens and spans: the context adds no row
    diff = {doc: max(abs(x[5] - y[5]) for x, y in zip(a, b) if x[0] == doc) for doc in ("q0", "q3")}
    assert diff["q0"] > 1e-3  # the prompt changed the response's scores
    assert diff["q3"] < 1e-4  # no prompt (null): scored as without a context field

    out = tmp_path / "export"
    assert main(["export", "--home", str(with_ctx), "--out", str(out), "--format", "jsonl.gz"]) == 0
    exported = [json.loads(x) for x in gzip.decompress((out / "chat.jsonl.gz").read_bytes()).decode().splitlines()]
    assert [r["prompt"] for r in exported] == [r["prompt"] for r in rows]  # the context passes through untouched
    assert sum(r["response"] != s["response"] for r, s in zip(exported, rows)) > 0  # only the response is edited
    instance = dg.DagsterInstance.from_config(str(with_ctx / "dagster_home"))
    version = instance.get_latest_materialization_event(dg.AssetKey("token_scores")).asset_materialization
    assert version is not None
    assert np.isfinite([r[5] for r in a]).all()  # every response token scored (after start token and prompt)
