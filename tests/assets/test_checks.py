"""The tail check in a real run: a heavy edit fails each shard with one line naming check, shard, measured
and allowed values (the verdict itself: tests/engine/test_verdict.py)."""

import pytest

from assets.cli import main


@pytest.mark.slow
def test_a_heavy_edit_at_default_thresholds_fails_with_one_line_per_shard(
    tmp_path, small_source, tiny_model_dir, capsys, monkeypatch
):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    code = main(
        [
            "run",
            "--home",
            str(tmp_path / "home"),
            "--source",
            str(small_source),
            "--model",
            str(tiny_model_dir),
            "--threshold",
            "0.002",
            "--exclude-original",
            "--synthetic-sample",
            "0.5",
            "--max-new-tokens",
            "8",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    failed = [line for line in err.splitlines() if "FAILED" in line]
    assert failed and all("edited_keeps_the_tail: shard " in line and "allowed at" in line for line in failed)
    assert "Dagster" not in err and "Error:" not in err
