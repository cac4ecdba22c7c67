"""Only missing or stale partitions are materialized: settings changes re-edit without the model, a changed
source file redoes only its own shard, and a run with nothing changed does nothing."""

import os
from pathlib import Path

import dagster as dg
import pytest

from assets.cli import main
from assets.definitions import build_defs
from assets.instance import prepare_instance
from assets.staleness import plan
from tests.conftest import write_jsonl
from tledit_pipeline.database import connect
from tledit_pipeline.settings import Settings
from tledit_pipeline.source import discover_shards

# With --apart-from-shards 0, `tledit run` builds distribution_health in a spawned process (assets/cli.py,
# _materialize_apart): the same refusal there, from a sitecustomize module on PYTHONPATH, which leaves a mark that it ran.
REFUSE_IN_STEP_PROCESSES = """
import pathlib
import sys

import tledit_pipeline.prior


def refuse(*_a, **_k):
    raise AssertionError("the prior was loaded")


tledit_pipeline.prior.load_prior = tledit_pipeline.prior.cached_prior = refuse
if "--multiprocessing-fork" in sys.argv:  # a process spawned by multiprocessing (not, say, Dagster's helpers)
    pathlib.Path(__file__).with_name("ran").touch()
"""


def _forbid_the_model(monkeypatch, folder: Path) -> Path:
    """No prior in this process nor in the step processes it starts; returns the mark a started one leaves."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(REFUSE_IN_STEP_PROCESSES)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p))

    def refuse(*_a, **_k):
        raise AssertionError("the prior was loaded")

    import transformers

    import assets.resources
    import tledit_pipeline.prior

    monkeypatch.setattr(tledit_pipeline.prior, "load_prior", refuse)
    monkeypatch.setattr(assets.resources, "cached_prior", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    return folder / "ran"


def _plan(home, **overrides):
    s = Settings.load(env={}, home=str(home), **overrides)
    instance = prepare_instance(s)
    return {w.key: w for w in plan(instance, build_defs(s).resolve_asset_graph(), s, discover_shards(s.source, s.home))}


def _materialized(home, asset):
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    return [
        r.event_log_entry.dagster_event.partition for r in instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
    ]


@pytest.mark.slow
def test_threshold_backfill_rerun_and_changed_file(tmp_path, small_source, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    base = ["run", "--home", str(home), "--source", str(small_source), "--model", str(tiny_model_dir)]
    assert main(base + ["--threshold", "0.5"]) == 0
    assert "plan: 2 of 2 shard(s) missing or stale" in capsys.readouterr().out

    # Nothing changed: nothing is materialized, not even the health table.
    assert main(["run", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "plan: 0 of 2 shard(s) missing or stale, 2 up to date" in out
    assert "distribution_health: up to date" in out and "materialized    nothing (all up to date)" in out
    assert sorted(_materialized(home, "token_scores")) == ["alpha", "beta"]

    # A new edit setting: edited_corpus is stale in every shard, token_scores is not.
    work = _plan(home, threshold=0.2)
    assert {k: w.assets for k, w in work.items()} == {
        "alpha": ("edited_corpus", "ngram_profile"),
        "beta": ("edited_corpus", "ngram_profile"),
    }
    assert "code version" in work["alpha"].reason
    step_process_ran = _forbid_the_model(monkeypatch, tmp_path / "forbid")
    args = ["--threshold", "0.2", "--strategy", "top_p", "--top-p", "0.95", "--apart-from-shards", "0"]
    assert main(["run", "--home", str(home), *args]) == 0
    out = capsys.readouterr().out
    assert "plan: 2 of 2 shard(s) missing or stale" in out
    assert "materialized    edited_corpus x2, ngram_profile x2, distribution_health" in out
    assert step_process_ran.exists()  # distribution_health was built in a process that refuses the prior too
    assert sorted(_materialized(home, "token_scores")) == ["alpha", "beta"]  # nothing rescored
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    md = instance.get_latest_materialization_event(dg.AssetKey("edited_corpus")).asset_materialization.metadata
    assert md["strategy"].value == "top_p" and "top_p=0.95" in md["edit_settings"].value
    con = connect(home)
    assert con.execute("SELECT count(*) FROM edited_corpus").fetchone()[0] == 5
    con.close()
    monkeypatch.undo()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))

    # A changed source file: only its shard's chain is redone.
    write_jsonl(small_source / "alpha.jsonl", [{"text": "Out, damned spot! Out, I say!", "lang": "en", "n": 9}])
    work = _plan(home)
    assert work["alpha"].assets == ("raw_corpus", "token_scores", "edited_corpus", "synthetic_corpus", "ngram_profile")
    assert "alpha.jsonl changed" in work["alpha"].reason and work["beta"].assets == ()
    assert main(["run", "--home", str(home)]) == 0
    assert "plan: 1 of 2 shard(s) missing or stale" in capsys.readouterr().out
    assert sorted(_materialized(home, "token_scores")) == ["alpha", "alpha", "beta"]


def test_deleted_lake_file_counts_as_missing(tmp_path, small_source, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    assert (
        main(["run", "--home", str(home), "--source", str(small_source), "--model", str(tiny_model_dir), "--shard", "alpha"]) == 0
    )
    (home / "lake" / "ngram_profile" / "shard=alpha" / "data.parquet").unlink()
    work = _plan(home)
    assert work["alpha"].assets == ("ngram_profile",) and "file missing" in work["alpha"].reason
    assert work["beta"].assets[0] == "raw_corpus" and "missing" in work["beta"].reason


def test_each_edit_setting_marks_only_edited_stale(tmp_path, small_source, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    s = Settings(home=home, source=str(small_source), model=str(tiny_model_dir))
    instance = prepare_instance(s)
    instance.add_dynamic_partitions("shards", ["alpha"])
    defs = build_defs(s)
    assert (
        defs.resolve_implicit_global_asset_job_def()
        .execute_in_process(
            instance=instance,
            partition_key="alpha",
            asset_selection=[
                dg.AssetKey(k) for k in ("raw_corpus", "token_scores", "edited_corpus", "synthetic_corpus", "ngram_profile")
            ],
        )
        .success
    )
    shard = [sh for sh in discover_shards(s.source, home) if sh.key == "alpha"]
    assert plan(instance, defs.resolve_asset_graph(), s, shard)[0].assets == ()
    for change in (
        {"threshold": 0.9},
        {"top_k": 4},
        {"beta": 1.0},
        {"seed": 3},
        {"strategy": "top_p"},
        {"exclude_original": True},
        {"drop_below": 0.001},
    ):
        changed = s.with_overrides(**change)
        work = plan(instance, build_defs(changed).resolve_asset_graph(), changed, shard)[0]
        assert work.assets == ("edited_corpus", "ngram_profile"), change
    # A setting of the synthetic baseline redoes it and the profile: no rescoring, no re-edit.
    for change in ({"prefix_tokens": 8}, {"max_new_tokens": 16}, {"synthetic_sample": 0.5}, {"synthetic_seed": 2}):
        changed = s.with_overrides(**change)
        assert plan(instance, build_defs(changed).resolve_asset_graph(), changed, shard)[0].assets == (
            "synthetic_corpus",
            "ngram_profile",
        ), change
    # A scoring setting makes token_scores stale instead.
    rescored = s.with_overrides(window=128, overlap=32)
    assert plan(instance, build_defs(rescored).resolve_asset_graph(), rescored, shard)[0].assets[0] == "token_scores"
    # What the prior reads rescores too; the document-start token also opens the baseline's first piece.
    for change, redone in (
        ({"document_start": False}, ("token_scores", "edited_corpus", "synthetic_corpus", "ngram_profile")),
        ({"context_field": "lang"}, ("token_scores", "edited_corpus", "ngram_profile")),
    ):
        changed = s.with_overrides(**change)
        assert plan(instance, build_defs(changed).resolve_asset_graph(), changed, shard)[0].assets[: len(redone)] == (redone), (
            change
        )
    # More generations: only the new generations' assets and what reads them; nothing rescored before them.
    more = s.with_overrides(generations=2)
    assert plan(instance, build_defs(more).resolve_asset_graph(), more, shard)[0].assets == (
        "token_scores_g1",
        "edited_corpus_g2",
        "token_scores_g2",
        "ngram_profile",
    )


@pytest.mark.slow
def test_drop_below_deletes_tokens_and_a_threshold_backfill_needs_no_model(
    tmp_path, small_source, tiny_model_dir, capsys, monkeypatch
):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    base = [
        "run",
        "--home",
        str(home),
        "--source",
        str(small_source),
        "--model",
        str(tiny_model_dir),
        # The tiny random prior's probabilities sit near 1 / vocabulary: q = 0.003 deletes a good share.
        "--drop-below",
        "0.003",
        "--min-tail-coverage",
        "0",
        "--max-js-divergence",
        "1",
    ]
    assert main(base) == 0
    assert "deleted share" in capsys.readouterr().out
    con = connect(home)
    deleted = con.execute("SELECT sum(n_deleted) FROM edited_corpus").fetchone()[0]
    share = con.execute(
        "SELECT value FROM distribution_health WHERE variant = 'edited' AND shard = '__all__' AND metric = 'deleted_share'"
    ).fetchone()[0]
    low = con.execute("SELECT count(*) FROM token_scores WHERE whole AND logprob < ln(0.003)").fetchone()[0]
    scored = con.execute("SELECT count(*) FROM token_scores WHERE logprob IS NOT NULL").fetchone()[0]
    shorter = con.execute(
        "SELECT count(*) FROM edited_corpus e JOIN raw_corpus r USING (shard, doc_id) WHERE length(e.text) < length(r.text)"
    ).fetchone()[0]
    con.close()
    assert deleted == low > 0 and share == pytest.approx(deleted / scored) and shorter > 0

    # Another deletion threshold, and another p: edited_corpus re-edited from stored scores, the model never loaded.
    step_process_ran = _forbid_the_model(monkeypatch, tmp_path / "forbid")
    assert main(["run", "--home", str(home), "--drop-below", "0.001", "--threshold", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "materialized    edited_corpus x2, ngram_profile x2, distribution_health" in out
    assert not step_process_ran.exists()  # 2 shards, below apart_from_shards: built here, where the prior is refused too
    assert sorted(_materialized(home, "token_scores")) == ["alpha", "beta"]  # nothing rescored
    con = connect(home)
    assert (
        con.execute("SELECT sum(n_deleted) FROM edited_corpus").fetchone()[0]
        == con.execute("SELECT count(*) FROM token_scores WHERE whole AND logprob < ln(0.001)").fetchone()[0]
        < deleted
    )
    con.close()
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    md = instance.get_latest_materialization_event(dg.AssetKey("edited_corpus")).asset_materialization.metadata
    assert "drop_below=0.001" in md["edit_settings"].value and md["deleted_tokens"].value >= 0
