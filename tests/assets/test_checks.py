"""The checks can fail: the tail check in a real run (a heavy edit fails each shard with one line naming check,
shard, measured and allowed values; the verdict itself: tests/engine/test_verdict.py), and each invariant check
on the defect it guards against."""

import pyarrow as pa
import pytest

from assets.checks import VERDICTS
from assets.cli import main
from tledit_pipeline.lake import write_partition
from tledit_pipeline.settings import Settings


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


def _lake(home, edited: dict, scores: dict) -> Settings:
    """A shard's raw, edited and scores partitions in a real lake, the edited and scored ones as given."""
    raw = {"doc_id": ["a", "b", "c"], "text": ["one two", "three four", "five six"]}
    write_partition(home, "raw_corpus", "s", pa.table(raw))
    write_partition(home, "edited_corpus", "s", pa.table(edited))
    write_partition(home, "token_scores", "s", pa.table(scores), meta={"first_scored": 1})
    return Settings(home=home)


GOOD_EDIT = {
    "doc_id": ["a", "b", "c"],
    "text": ["one two", "three 4", "five six"],
    "n_changed": [0, 1, 0],
    "n_deleted": [0, 0, 0],
}
GOOD_SCORES = {
    "doc_id": ["a", "a", "b", "b", "c", "c"],
    "pos": [0, 1, 0, 1, 0, 1],
    "logprob": [None, -1.0, None, -0.5, None, -2.0],
}


@pytest.mark.parametrize(
    ("edited", "scores", "check", "why"),
    [
        ({**GOOD_EDIT, "doc_id": ["a", "b", "b"]}, GOOD_SCORES, "every_raw_document_edited", "1 missing, 0 extra, 1 duplicated"),
        (
            {**GOOD_EDIT, "text": ["one  two", "three 4", "five six"]},
            GOOD_SCORES,
            "every_raw_document_edited",
            "1 unchanged but different",
        ),
        (GOOD_EDIT, {**GOOD_SCORES, "logprob": [None, -1.0, None, None, None, -2.0]}, "every_token_scored", "1 unscored tokens"),
        (GOOD_EDIT, {**GOOD_SCORES, "pos": [0, 1, 0, 2, 0, 1]}, "every_token_scored", "1 documents with gaps"),
        (GOOD_EDIT, {k: v[:4] for k, v in GOOD_SCORES.items()}, "every_token_scored", "2 of 3 documents scored"),
    ],
)
def test_every_shard_check_can_fail(tmp_path, edited, scores, check, why):
    """Each invariant check passes a consistent shard and fails the defect it guards against, in one line."""
    good = _lake(tmp_path / "good", GOOD_EDIT, GOOD_SCORES)
    assert VERDICTS[check](good, "s")[0]
    ok, _, line = VERDICTS[check](_lake(tmp_path / "bad", edited, scores), "s")
    assert not ok and line.startswith(f"{check}: shard s: ") and why in line and "\n" not in line
