"""The bench harness on the tiny prior: every figure present, consistent, and the JSON line last."""

import json

import numpy as np
import pytest

from benchmarks import bench
from tledit_pipeline.prior import cpu_has_bf16
from tledit_pipeline.scorer import Scorer, tokenize
from tledit_pipeline.settings import ScoringSettings, Settings


@pytest.fixture
def tiny_settings(tmp_path, tiny_model_dir, small_source):
    return Settings(
        home=tmp_path / "home", source=str(small_source), model=str(tiny_model_dir), model_cache=tmp_path / "models"
    ).with_overrides(window=64, overlap=16, batch_tokens=256, device="cpu", dtype="float32")


def test_run_reports_every_figure(tiny_settings):
    fig = bench.run(tiny_settings, naive_every=1, memory_tokens=0, profile=False)
    for key in (
        "tokens",
        "pipeline_tokens_per_s",
        "forward_tokens_per_s",
        "naive_tokens_per_s",
        "matmul_flops_per_s",
        "flops_per_token",
        "roofline_fraction",
        "peak_rss_mb",
        "device",
        "dtype",
        "reedit_tokens_per_s",
        "reedit_speedup_vs_scoring",
        "synthetic_tokens_per_s",
        "synthetic_vs_pipeline",
        "batched_model_tokens_per_s",
        "pipeline_vs_batched_model",
        "forward_kind",
        "dtype_probe",
    ):
        assert key in fig, key
    assert fig["documents"] == 5 and fig["shards"] == 2
    assert fig["device"] == "cpu" and fig["dtype"] == "float32"
    assert fig["roofline_fraction"] == pytest.approx(
        fig["pipeline_tokens_per_s"] * fig["flops_per_token"] / fig["matmul_flops_per_s"], abs=1e-3
    )
    # Ratios of figures rounded to 0.1 token/s: within the rounding of both rates.
    assert fig["pipeline_vs_forward"] == pytest.approx(
        fig["pipeline_tokens_per_s"] / fig["forward_tokens_per_s"], rel=2e-3, abs=1e-3
    )
    # The naive loop runs on every document and truncates nothing here (context 256 > every document): every token.
    assert fig["naive_tokens"] == fig["tokens"] and fig["naive_documents_every"] == 1
    # forward is a plain Hugging Face forward, one document at a time; the pipeline's own model part is batched_model.
    assert fig["forward_kind"] == "hf_forward_batch1"
    assert fig["pipeline_vs_batched_model"] == pytest.approx(
        fig["pipeline_tokens_per_s"] / fig["batched_model_tokens_per_s"], rel=2e-3, abs=1e-3
    )
    probe = fig["dtype_probe"]
    assert probe["picks"] in ("float32", "bfloat16") and probe["auto"] in ("float32", "bfloat16")
    assert set(probe["seconds"]) == {"float32", "bfloat16"} and probe["wall_s"] < 30
    assert 0 <= fig["padding_share"] < 1
    assert fig["pipeline_vs_naive"] == pytest.approx(fig["pipeline_tokens_per_s"] / fig["naive_tokens_per_s"], abs=0.01)
    # The ceiling is what pipeline_vs_naive would be with every scored token at the matmul peak.
    assert fig["pipeline_vs_naive_ceiling"] == pytest.approx(
        fig["matmul_flops_per_s"] / fig["flops_per_token"] / fig["naive_tokens_per_s"], rel=1e-2, abs=0.01
    )
    assert fig["bf16_matmul_flops_per_s"] > 0 and fig["bf16_native"] == cpu_has_bf16()
    # The full-size baseline: every document to its full length, so it generates more than half the tokens.
    assert fig["synthetic_tokens"] > fig["tokens"] / 2 and "sample=1.0" in fig["synthetic_settings"]
    assert fig["synthetic_vs_pipeline"] == pytest.approx(fig["synthetic_tokens_per_s"] / fig["pipeline_tokens_per_s"], abs=1e-3)
    table = bench.report(fig)
    assert "synthetic_vs_pipeline" in table and "synthetic tokens/s" in table
    assert "pipeline_vs_naive" in table and "roofline_fraction" in table and "ceiling in this dtype" in table


def test_main_prints_json_last(tiny_settings, monkeypatch, capsys):
    monkeypatch.setenv("TLEDIT_HOME", str(tiny_settings.home))
    monkeypatch.setenv("TLEDIT_MODEL_CACHE", str(tiny_settings.models_dir))
    for var, value in (("TLEDIT_WINDOW", "64"), ("TLEDIT_OVERLAP", "16"), ("TLEDIT_BATCH_TOKENS", "256")):
        monkeypatch.setenv(var, value)
    out = tiny_settings.home.parent / "fig.json"
    assert (
        bench.main(
            [
                *("--source", tiny_settings.source, "--model", tiny_settings.model, "--memory-tokens", "0"),
                *("--no-synthetic", "--json", str(out)),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    fig = json.loads(lines[-1])
    assert fig == json.loads(out.read_text())
    assert fig["tokens"] > 0 and "naive tokens/s" in "\n".join(lines) and "dtype probe" in "\n".join(lines)
    assert "synthetic_tokens_per_s" not in fig and "synthetic" not in "\n".join(lines)  # --no-synthetic


def test_memory_probe_scores_about_the_tokens_asked(tiny_settings):
    one = bench.memory_probe(tiny_settings, 300)
    assert 300 <= one["tokens"] < 300 + 400  # whole documents, so it overshoots by less than the longest one
    assert one["peak_rss_mb"] >= one["base_rss_mb"] > 0
    four = bench.memory_probe(tiny_settings, 300, repeat=4)
    assert four["tokens"] == 4 * one["tokens"] and four["documents"] == 4 * one["documents"]


def test_plain_forward_scores_every_document_token(tiny_settings, tiny_prior, tmp_path):
    """The plain forward yardstick reads every document (in windows where longer than one) and counts its tokens."""
    keys = bench._raw_lake(tiny_settings, tmp_path)
    scorer = Scorer(tiny_prior, ScoringSettings(window=32, overlap=8, batch_tokens=64))
    for key in keys:
        n, seconds = bench.hf_forward(scorer, tmp_path, key)
        assert n == sum(len(x) for x in tokenize(tiny_prior, bench._texts(tmp_path, key))) and seconds > 0


def test_useful_flops_counts_keys_each_scored_token_sees(tiny_prior):
    scorer = Scorer(tiny_prior, ScoringSettings(window=32, overlap=8, batch_tokens=64))
    ids = tokenize(tiny_prior, ["word " * 40, "short text"])
    windows, batches = scorer.plan(ids)
    scored = sum(w.end - w.score_from for w in windows)
    total, per_token = bench.useful_flops(tiny_prior, batches, scored)
    cfg = tiny_prior.model.config
    keys = sum(int(np.arange(w.score_from - w.start, w.length + 0).sum()) for w in windows)
    assert per_token == 2 * tiny_prior.n_params
    assert total == per_token * scored + 4 * cfg.num_hidden_layers * cfg.hidden_size * keys


def test_matmul_peak_is_positive():
    assert bench.matmul_flops_per_s("cpu", "float32", repeats=1) > 0


def test_pipeline_with_its_lake_on_an_object_store(tiny_settings, s3, small_source):
    """--source and --lake on the S3 server: the store's pass is timed beside the local one, then removed."""
    source = s3.upload_folder(small_source, "corpus")
    fig = bench.run(
        tiny_settings.with_overrides(source=source), naive_every=4, memory_tokens=0, profile=False, lake=s3.url("scratch")
    )
    assert fig["store"] == "s3" and fig["documents"] == 5 and fig["store_pipeline_tokens_per_s"] > 0
    assert fig["store_vs_local"] == pytest.approx(fig["store_pipeline_tokens_per_s"] / fig["pipeline_tokens_per_s"], rel=0.02)
    assert 0 < fig["store_io_share"] < 1 and s3.keys("scratch") == []
    assert "lake on s3:// vs local" in bench.report(fig) and "waiting on the store" in bench.report(fig)
