"""Exactness: the edit never disturbs text it does not change, and the same settings and seed give the same
bytes whatever the batch size, thread count or shard split."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tledit_pipeline.edited import edit_shard
from tledit_pipeline.lake import partition_file, write_partition
from tledit_pipeline.scorer import tokenize
from tledit_pipeline.scoring import score_table
from tledit_pipeline.settings import EditSettings, ScoringSettings
from tledit_pipeline.source import doc_ids
from tledit_pipeline.spans import token_spans

K = 4
# Characters that byte-level BPE splits into pieces, plus line ends and combining marks.
HARD = list("\u65e5\u672c\u8a9e\u4e2d\u6587\u9f8d\u00e9\u00fc\u0301\u0308\u200d\r\n\t ") + [
    "\U0001f600",
    "\U0001f680",
    "\U0001f9ea",
    "\U0001f468",
]
# Any valid Unicode (lone surrogates are rejected when a shard is read, so they never reach the tokenizer).
TEXT = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(HARD), st.sampled_from(list("abc def."))),
    min_size=1,
    max_size=80,
)


def _score_rows(
    prior, text: str, chosen: set[int], replacement: list[int], first_scored: bool = True
) -> tuple[pa.Table, list[bytes]]:
    """token_scores rows for one document that make exactly the `chosen` tokens certain (P = 1), with the
    given replacement as the only candidate: the edit rule then changes every chosen token it may.
    Without `first_scored` position 0 has no score, as when the prior reads no document-start token."""
    ids = tokenize(prior, [text])[0]
    byte_len = np.array([len(b) if b else 0 for b in prior.token_bytes])
    sp = token_spans(text, ids, prior.token_bytes, byte_len, prior.replaceable)
    assert sp.exact
    n = len(ids)
    logprob = np.array([0.0 if i in chosen else -30.0 for i in range(n)], dtype=np.float32)
    if not first_scored and n:
        logprob[0] = np.nan
    topk_ids = np.array([[replacement[i % len(replacement)]] + [0] * (K - 1) for i in range(n)], dtype=np.int32)
    topk_lp = np.array([[0.0] + [-np.inf] * (K - 1)] * n, dtype=np.float16)
    table = pa.table(
        {
            "doc_id": ["d"] * n,
            "pos": pa.array(np.arange(n, dtype=np.int32)),
            "token_id": pa.array(ids.astype(np.int32)),
            "char_start": pa.array(sp.char_start),
            "char_end": pa.array(sp.char_end),
            "logprob": pa.array(logprob),
            "whole": pa.array(sp.whole),
            "topk_ids": pa.FixedSizeListArray.from_arrays(pa.array(topk_ids.reshape(-1)), K),
            "topk_logprobs": pa.FixedSizeListArray.from_arrays(pa.array(topk_lp.reshape(-1)), K),
        }
    )
    return table, [prior.token_bytes[i] for i in ids]


@given(text=TEXT, data=st.data())
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_unchanged_tokens_keep_their_bytes_in_place(tiny_prior, text, data):
    n = len(tokenize(tiny_prior, [text])[0])
    chosen = set(data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=n), label="chosen"))
    replaceable = np.flatnonzero(tiny_prior.replaceable)
    replacement = data.draw(st.lists(st.sampled_from(replaceable.tolist()), min_size=1, max_size=5), label="replacement")
    first_scored = data.draw(st.booleans(), label="first_scored")
    scores, token_bytes = _score_rows(tiny_prior, text, chosen, replacement, first_scored)
    vocab = tiny_prior.vocab_table().column("text").to_pylist()
    raw = pa.table({"doc_id": ["d"], "text": [text]})
    out, stats = edit_shard("s", raw, scores, vocab, EditSettings(threshold=0.99, top_k=1, seed=0))
    edited = out["text"][0].as_py()

    whole = scores["whole"].to_numpy(zero_copy_only=False)
    ids = scores["token_id"].to_numpy()
    # The edit may touch only chosen, whole, scored tokens (the first only when scored after the start token):
    # never a byte piece of a character.
    expected_parts = []
    n_changed = 0
    for i, b in enumerate(token_bytes):
        new = replacement[i % len(replacement)]
        if i in chosen and (i > 0 or first_scored) and whole[i] and new != ids[i]:
            expected_parts.append(tiny_prior.token_bytes[new])
            n_changed += 1
        else:
            expected_parts.append(b)  # an unchanged token's bytes, in its place
    assert stats.changed == n_changed == out["n_changed"][0].as_py()
    assert edited.encode("utf-8") == b"".join(expected_parts)  # valid UTF-8 (no lone surrogates) and exact
    if n_changed == 0:
        assert edited == text and edited.encode("utf-8") == text.encode("utf-8")


@given(text=TEXT, data=st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_deletion_cuts_only_whole_unlikely_tokens(tiny_prior, text, data):
    """--drop-below: the chosen tokens made unlikely are cut when whole, every other byte stays in place."""
    n = len(tokenize(tiny_prior, [text])[0])
    chosen = set(data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=n), label="chosen"))
    scores, token_bytes = _score_rows(tiny_prior, text, set(), [1])
    lp = np.where([i in chosen for i in range(n)], -30.0, np.log(0.7)).astype(np.float32)  # P ~ 1e-13 or 0.7
    scores = scores.set_column(scores.schema.get_field_index("logprob"), "logprob", pa.array(lp))
    vocab = tiny_prior.vocab_table().column("text").to_pylist()
    out, stats = edit_shard(
        "s", pa.table({"doc_id": ["d"], "text": [text]}), scores, vocab, EditSettings(threshold=0.99, top_k=1, drop_below=0.001)
    )
    whole = scores["whole"].to_numpy(zero_copy_only=False)
    cut = [i in chosen and whole[i] for i in range(n)]
    assert stats.deleted == sum(cut) == out["n_deleted"][0].as_py() and stats.changed == 0
    expected = b"".join(b for b, c in zip(token_bytes, cut) if not c)
    assert out["text"][0].as_py().encode("utf-8") == expected  # valid UTF-8, exact


@given(text=TEXT)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_pieces_of_a_character_are_never_whole(tiny_prior, text):
    ids = tokenize(tiny_prior, [text])[0]
    byte_len = np.array([len(b) if b else 0 for b in tiny_prior.token_bytes])
    sp = token_spans(text, ids, tiny_prior.token_bytes, byte_len, tiny_prior.replaceable)
    assert sp.exact  # the tokenizer never normalizes: its bytes spell the text
    encoded = text.encode("utf-8")
    char_starts = {len(text[:c].encode("utf-8")) for c in range(len(text) + 1)}
    at = 0
    for i, t in enumerate(ids):
        b = tiny_prior.token_bytes[t]
        assert encoded[at : at + len(b)] == b
        piece = at not in char_starts or at + len(b) not in char_starts
        if piece:
            assert not sp.whole[i]  # a byte piece of an emoji or CJK character is never editable
        if sp.whole[i]:
            assert text[sp.char_start[i] : sp.char_end[i]].encode("utf-8") == b
        at += len(b)
    assert at == len(encoded)


def test_no_change_means_identical_output(tiny_prior):
    texts = ["Caf\u00e9 \u65e5\u672c\u8a9e \U0001f600 e\u0301\r\nline two\r\n", "plain text", "\U0001f468\u200d\U0001f469 \u9f8d"]
    raw = pa.table({"doc_id": ["a", "b", "c"], "text": texts})
    scores, _ = score_table(tiny_prior, "s", raw, ScoringSettings(window=32, overlap=8, batch_tokens=64))
    vocab = tiny_prior.vocab_table().column("text").to_pylist()
    out, stats = edit_shard("s", raw, scores, vocab, EditSettings(threshold=1.0))
    assert stats.changed == 0
    assert [t.encode("utf-8") for t in out["text"].to_pylist()] == [t.encode("utf-8") for t in texts]


# ---------------------------------------------------------------- determinism


def _generate(prior, prompt: str, n: int, seed: int) -> str:
    """Text the tiny prior finds likely, so the edit rule has confident tokens to change."""
    import torch

    allowed = torch.from_numpy(
        np.array(
            [
                bool(b) and ok and b.isascii() and b.strip() != b"" or b == b" "
                for b, ok in zip(prior.token_bytes, prior.replaceable)
            ]
        )
    )
    ids = tokenize(prior, [prompt])[0].tolist()
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        for _ in range(n):  # the whole text each step: no KV cache argument, whose name differs across transformers
            logits = prior.model(input_ids=torch.tensor([ids])).logits[0, -1].clone()
            logits[~allowed] = -float("inf")
            ids.append(int(torch.multinomial(torch.softmax(logits / 0.5, -1), 1, generator=gen)))
    return prior.tokenizer.decode(ids)


@pytest.fixture(scope="module")
def corpus(tiny_prior) -> list[str]:
    human = ["Caf\u00e9 \u65e5\u672c\u8a9e \U0001f600 e\u0301 done.\r\nNext line.", "Fair is foul, and foul is fair. " * 6]
    return human + [_generate(tiny_prior, p, 40, i) for i, p in enumerate(["When shall", "Fair is", "The quick"])]


def _edited(prior, texts: list[str], shard: str, batch_tokens: int, threads: int) -> dict[str, tuple[str, int]]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        raw = pa.table({"doc_id": doc_ids(texts, None), "text": texts})
        scores, _ = score_table(
            prior, shard, raw, ScoringSettings(window=48, overlap=16, batch_tokens=batch_tokens, dtype="float32")
        )
    finally:
        torch.set_num_threads(before)
    vocab = prior.vocab_table().column("text").to_pylist()
    out, _ = edit_shard(shard, raw, scores, vocab, EditSettings(threshold=0.5, seed=11))
    return {d: (t, c) for d, t, c in zip(out["doc_id"].to_pylist(), out["text"].to_pylist(), out["n_changed"].to_pylist())}


def test_same_seed_same_bytes_across_batches_threads_and_shard_splits(tiny_prior, corpus, tmp_path):
    reference = _edited(tiny_prior, corpus, "all", batch_tokens=48, threads=1)
    assert sum(c for _, c in reference.values()) > 0  # the comparison is about real edits
    variants = {
        "same run again": _edited(tiny_prior, corpus, "all", batch_tokens=48, threads=1),
        "big batches": _edited(tiny_prior, corpus, "all", batch_tokens=4096, threads=1),
        "two threads": _edited(tiny_prior, corpus, "all", batch_tokens=480, threads=2),
        "two shards": _edited(tiny_prior, corpus[:3], "one", 96, 1) | _edited(tiny_prior, corpus[3:], "two", 96, 2),
        "reversed order": _edited(tiny_prior, corpus[::-1], "all", batch_tokens=192, threads=1),
    }
    for name, got in variants.items():
        assert got.keys() == reference.keys(), name
        for doc in reference:
            assert got[doc][0].encode("utf-8") == reference[doc][0].encode("utf-8"), (name, doc)
            assert got[doc][1] == reference[doc][1], (name, doc)


def test_same_settings_give_the_same_partition_bytes(tiny_prior, corpus, tmp_path):
    files = []
    for run in ("a", "b"):
        home = tmp_path / run
        raw = pa.table({"doc_id": doc_ids(corpus, None), "text": corpus})
        scores, _ = score_table(
            tiny_prior, "s", raw, ScoringSettings(window=48, overlap=16, batch_tokens=192 if run == "a" else 96)
        )
        vocab = tiny_prior.vocab_table().column("text").to_pylist()
        edited, _ = edit_shard("s", raw, scores, vocab, EditSettings(threshold=0.5, seed=11))
        write_partition(home, "edited_corpus", "s", edited, meta={"edit": "same"})
        files.append(partition_file(home, "edited_corpus", "s").read_bytes())
    assert files[0] == files[1]
