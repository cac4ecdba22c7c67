"""Shared fixtures: a tiny randomly-initialised Llama prior over a real byte-level BPE tokenizer.

Real transformers code on small weights: fast enough for unit tests, same code paths as the bundled prior.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TRAIN_TEXT = [
    "Fair is foul, and foul is fair: hover through the fog and filthy air. " * 8,
    "When shall we three meet again? In thunder, lightning, or in rain? " * 8,
    "The quick brown fox jumps over the lazy dog. 0123456789 " * 4,
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u65e5\u672c\u8a9e \u4e2d\u6587 \U0001f600 \U0001f680 e\u0301 \r\n\t",
]


def build_tiny_model(folder: Path, vocab_size: int = 400, context: int = 256, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAIN_TEXT, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
        bos_token_id=fast.eos_token_id,
    )
    model = LlamaForCausalLM(cfg)
    # A sharper output distribution. Random weights are still unsure about human text (max P about 0.07):
    # tests that need eligible tokens score text sampled from this prior itself (see test_edited.py).
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-prior"))


@pytest.fixture(scope="session")
def tiny_prior(tiny_model_dir, tmp_path_factory):
    from tledit_pipeline.prior import load_prior

    return load_prior(str(tiny_model_dir), tmp_path_factory.mktemp("models"), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def models_cache(tmp_path_factory) -> Path:
    """Where the bundled prior is converted: TLEDIT_MODEL_CACHE (shared with `make demo`) or a temp dir."""
    cache = os.environ.get("TLEDIT_MODEL_CACHE")
    return Path(cache) if cache else tmp_path_factory.mktemp("bundled-models")


def write_jsonl(path: Path, rows: list[dict], gz: bool = False) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


@pytest.fixture
def small_source(tmp_path) -> Path:
    """Two shards of real text in two formats, with passthrough fields and one long document."""
    src = tmp_path / "source"
    src.mkdir()
    write_jsonl(
        src / "alpha.jsonl",
        [
            {"text": "When shall we three meet again? In thunder, lightning, or in rain?", "lang": "en", "n": 1},
            {"text": "Fair is foul, and foul is fair. Hover through the fog and filthy air.", "lang": "en", "n": 2},
            {"text": "Caf\u00e9 \u65e5\u672c\u8a9e \U0001f600 e\u0301 done.\r\nNext line.", "lang": "mixed", "n": 3},
        ],
    )
    write_jsonl(
        src / "beta.jsonl.gz",
        [
            {"text": "The quick brown fox jumps over the lazy dog. " * 30, "lang": "en", "n": 4},
            {"text": "Is this a dagger which I see before me?", "lang": "en", "n": 5},
        ],
        gz=True,
    )
    return src


THREE_SHARDS = ["s0", "s1", "s2"]


@pytest.fixture
def three_shards(tmp_path) -> Path:
    """Three one-file shards s0, s1, s2 of two short documents each (test_scale, test_postgres)."""
    src = tmp_path / "source"
    src.mkdir()
    texts = [
        "When shall we three meet again? In thunder, lightning, or in rain?",
        "Fair is foul, and foul is fair. Hover through the fog and filthy air.",
        "Is this a dagger which I see before me, the handle toward my hand?",
    ]
    for i, key in enumerate(THREE_SHARDS):
        write_jsonl(src / f"{key}.jsonl", [{"text": texts[i]}, {"text": texts[(i + 1) % 3] + " " + key}])
    return src


from tests.postgres import postgres_server, postgres_url  # noqa: E402,F401  (fixtures: a real PostgreSQL server, a fresh database)
from tests.s3 import s3, s3_server  # noqa: E402,F401  (fixtures: a real S3-compatible server, a fresh bucket)


def plan_from_indexes(instance, graph, settings, found, monkeypatch) -> list:
    """The stale plan after s1.jsonl of `three_shards` changed, read from the event log's indexes only (a
    read of whole records fails): s1 redone from raw_corpus, s0 and s2 untouched."""
    from assets import staleness

    with monkeypatch.context() as m:
        m.setattr(staleness, "latest_materializations", lambda *a, **k: pytest.fail("the plan read whole records"))
        indexed = staleness.plan(instance, graph, settings, found)
    assert [(w.key, w.assets[:1], w.reason) for w in indexed] == [
        ("s0", (), ""),
        ("s1", ("raw_corpus",), "source file s1.jsonl changed"),
        ("s2", (), ""),
    ]
    return indexed
