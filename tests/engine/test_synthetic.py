"""The synthetic baseline: deterministic samples of the tiny prior in pieces, with their log-probs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tledit_pipeline.decoding import ModelDecoder
from tledit_pipeline.prior import document_start_id
from tledit_pipeline.scorer import tokenize
from tledit_pipeline.settings import SyntheticSettings
from tledit_pipeline.synthetic import SYNTHETIC_SCHEMA, in_sample, plan_pieces, synthesize

DOCS = pa.table(
    {
        "doc_id": ["a", "b", "c", "d", "e"],
        "text": [
            "When shall we three meet again? In thunder, lightning, or in rain? " * 3,
            "Fair is foul, and foul is fair: hover through the fog and filthy air.",
            "The quick brown fox jumps over the lazy dog.",
            "x",
            "Caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001f600 r\u00e9sum\u00e9 and more words after it.",
        ],
    }
)


def _settings(**kw) -> SyntheticSettings:
    """Full length, in pieces of at most 20 tokens (the first document has 3)."""
    return SyntheticSettings(**({"prefix_tokens": 6, "max_new_tokens": 0, "synthetic_segment": 20, "synthetic_sample": 1.0} | kw))


def test_plan_pieces():
    s = SyntheticSettings(prefix_tokens=32, max_new_tokens=256, synthetic_segment=0)
    assert plan_pieces(1000, s, 2048) == [(0, 32, 256)]  # cap
    assert plan_pieces(100, s, 2048) == [(0, 32, 68)]  # to the document's length
    assert plan_pieces(20, s, 2048) == [(0, 10, 10)]  # a short document: the prior writes at least half
    assert plan_pieces(1, s, 2048) == [(0, 1, 0)]
    assert plan_pieces(0, s, 2048) == []
    full = SyntheticSettings(prefix_tokens=32, max_new_tokens=0, synthetic_segment=0)
    assert plan_pieces(1000, full, 2048) == [(0, 32, 968)]  # full length
    assert plan_pieces(5000, full, 2048) == [(0, 32, 1634), (1666, 32, 1635), (3333, 32, 1635)]  # the context splits


def test_plan_pieces_cut_long_documents_into_equal_pieces():
    s = SyntheticSettings(prefix_tokens=32, max_new_tokens=0, synthetic_segment=512)
    assert plan_pieces(512, s, 8192) == [(0, 32, 480)]
    pieces = plan_pieces(1300, s, 8192)
    assert pieces == [(0, 32, 401), (433, 32, 401), (866, 32, 402)]
    assert [b - a for (a, *_), (b, *_) in zip(pieces, pieces[1:] + [(1300,)])] == [433, 433, 434]
    # Every raw position is either a prefix or a generated token of exactly one piece.
    covered = [q for start, prefix, target in pieces for q in range(start, start + prefix + target)]
    assert covered == list(range(1300))
    # With a cap the document is cut first: the same first piece as without pieces.
    assert plan_pieces(5000, SyntheticSettings(prefix_tokens=32, max_new_tokens=128), 8192) == [(0, 32, 128)]
    capped = plan_pieces(5000, SyntheticSettings(prefix_tokens=32, max_new_tokens=1000, synthetic_segment=512), 8192)
    assert capped[0][:2] == (0, 32) and sum(p + t for _, p, t in capped) == 1032


def test_rows_lengths_and_logprobs(tiny_prior):
    table, stats = synthesize(tiny_prior, "s1", DOCS, _settings())
    assert table.schema == SYNTHETIC_SCHEMA
    assert table.column("doc_id").to_pylist() == DOCS.column("doc_id").to_pylist()  # same ids, raw order
    assert set(table.column("shard").to_pylist()) == {"s1"}
    ids = tokenize(tiny_prior, DOCS.column("text").to_pylist())
    text = lambda toks: b"".join(tiny_prior.token_bytes[t] for t in toks).decode("utf-8", "replace")  # noqa: E731
    for row, raw_ids in zip(table.to_pylist(), ids):
        assert row["raw_tokens"] == len(raw_ids)
        plan = plan_pieces(len(raw_ids), _settings(), tiny_prior.context_length)
        assert [(p["start"], p["prefix"], p["target"]) for p in row["pieces"]] == plan
        assert row["prefix_tokens"] == sum(p["prefix"] for p in row["pieces"])
        assert row["target_tokens"] == sum(p["target"] for p in row["pieces"])
        assert row["new_tokens"] == sum(p["new"] for p in row["pieces"]) == len(row["token_ids"]) == len(row["logprobs"])
        assert all(p["new"] <= p["target"] for p in row["pieces"])
        if row["ended"] == "length":
            assert row["new_tokens"] == row["target_tokens"]
        assert all(lp <= 0 for lp in row["logprobs"])
        assert all(tiny_prior.token_bytes[t] is not None for t in row["token_ids"])  # never a control token
        # The text is each piece's human prefix followed by its continuation; the reference is raw at the
        # same positions.
        gen, human, ref = list(row["token_ids"]), [], []
        for p in row["pieces"]:
            human += list(raw_ids[p["start"] : p["start"] + p["prefix"]]) + gen[: p["new"]]
            ref += list(raw_ids[p["start"] : p["start"] + p["prefix"] + p["new"]])
            gen = gen[p["new"] :]
        assert row["text"] == text(human)
        assert row["reference_text"] == text(ref)
    rows = table.to_pylist()
    assert len(rows[0]["pieces"]) == 3  # the long document is written in pieces of at most 20 tokens
    d = rows[3]
    assert (d["prefix_tokens"], d["new_tokens"], d["ended"], d["text"]) == (1, 0, "nothing_to_generate", "x")
    assert stats.sampled == stats.documents == 5
    assert stats.new_tokens == sum(table.column("new_tokens").to_pylist()) > 0
    assert stats.pieces == sum(len(r["pieces"]) for r in rows)


@pytest.mark.parametrize("with_start", [False, True])
def test_logprobs_are_the_priors_at_temperature_one(tiny_prior, with_start):
    """Re-scoring each generated piece teacher-forced gives back the recorded log-probs; the document-start
    token, when given, comes before the first piece only."""
    import torch

    start = document_start_id(tiny_prior.tokenizer) if with_start else None
    table, _ = synthesize(tiny_prior, "s1", DOCS.slice(0, 1), _settings(), start_token=start)
    row = table.to_pylist()[0]
    raw = tokenize(tiny_prior, DOCS.column("text").to_pylist()[:1])[0]
    gen, lps = list(row["token_ids"]), list(row["logprobs"])
    assert len(row["pieces"]) > 1
    for p in row["pieces"]:
        head = [start] if start is not None and p["start"] == 0 else []
        prefix = np.concatenate([head, raw[p["start"] : p["start"] + p["prefix"]]]).astype(np.int64)
        seq = torch.tensor(np.concatenate([prefix, gen[: p["new"]]]))[None]
        with torch.inference_mode():
            logp = torch.log_softmax(tiny_prior.model(input_ids=seq).logits[0].float(), -1)
        n = len(prefix)
        expected = logp[n - 1 : -1].gather(1, seq[0, n:, None])[:, 0].numpy()
        np.testing.assert_allclose(lps[: p["new"]], expected, atol=1e-4)
        gen, lps = gen[p["new"] :], lps[p["new"] :]
    if with_start:  # the start token changes what the prior writes after the first prefix
        plain, _ = synthesize(tiny_prior, "s1", DOCS.slice(0, 1), _settings())
        assert plain.column("logprobs").to_pylist() != table.column("logprobs").to_pylist()


def test_deterministic_and_independent_of_batch_size(tiny_prior):
    one, _ = synthesize(tiny_prior, "s1", DOCS, _settings(synthetic_batch=1))
    again, _ = synthesize(tiny_prior, "s1", DOCS, _settings(synthetic_batch=1))
    assert one.equals(again)
    for other in (
        synthesize(tiny_prior, "s1", DOCS, _settings(synthetic_batch=2))[0],
        synthesize(tiny_prior, "s1", DOCS, _settings(synthetic_batch=8), workers=1)[0],
        synthesize(tiny_prior, "s1", DOCS, _settings(synthetic_batch=8), workers=3)[0],  # batches side by side
        # The model's own forward with a DynamicCache: the same draws.
        synthesize(tiny_prior, "s1", DOCS, _settings(synthetic_batch=3), decoder=ModelDecoder(tiny_prior.model))[0],
    ):
        assert other.column("token_ids").to_pylist() == one.column("token_ids").to_pylist()
        assert other.column("text").to_pylist() == one.column("text").to_pylist()
        np.testing.assert_allclose(
            np.concatenate(one.column("logprobs").to_pylist()), np.concatenate(other.column("logprobs").to_pylist()), atol=1e-4
        )
    other_seed, _ = synthesize(tiny_prior, "s1", DOCS, _settings(synthetic_seed=1))
    assert other_seed.column("token_ids").to_pylist() != one.column("token_ids").to_pylist()


def test_decoding_settings_change_the_samples(tiny_prior):
    plain, _ = synthesize(tiny_prior, "s1", DOCS, _settings())
    top_p, _ = synthesize(tiny_prior, "s1", DOCS, _settings(synthetic_top_p=0.5))
    cold, _ = synthesize(tiny_prior, "s1", DOCS, _settings(synthetic_temperature=0.5))
    assert top_p.column("token_ids").to_pylist() != plain.column("token_ids").to_pylist()
    assert cold.column("token_ids").to_pylist() != plain.column("token_ids").to_pylist()
    # Truncated and colder sampling pick likelier tokens: the recorded (temperature-1) log-probs rise.
    mean = lambda t: float(np.mean(np.concatenate(t.column("logprobs").to_pylist())))  # noqa: E731
    assert mean(top_p) > mean(plain) and mean(cold) > mean(plain)


def test_sample_is_keyed_by_doc_id():
    ids = [f"doc-{i}" for i in range(2000)]
    mask = in_sample(ids, 0.25, seed=0)
    assert 0.2 < mask.mean() < 0.3
    # The same document gets the same decision whatever else is in its shard.
    assert in_sample(ids[500:700], 0.25, seed=0).tolist() == mask[500:700].tolist()
    assert in_sample(ids, 0.25, seed=1).tolist() != mask.tolist()
    assert in_sample(ids, 1.0, seed=0).all()


def test_documents_outside_the_sample_are_not_rows(tiny_prior):
    table, stats = synthesize(tiny_prior, "s1", DOCS, _settings(synthetic_sample=0.5, synthetic_seed=3))
    chosen = in_sample(DOCS.column("doc_id").to_pylist(), 0.5, 3)
    assert table.column("doc_id").to_pylist() == [d for d, c in zip(DOCS.column("doc_id").to_pylist(), chosen) if c]
    assert (stats.documents, stats.sampled) == (5, int(chosen.sum()))


def test_empty_shard(tiny_prior):
    table, stats = synthesize(tiny_prior, "s1", DOCS.slice(0, 0), _settings())
    assert table.num_rows == 0 and table.schema == SYNTHETIC_SCHEMA
    assert stats.new_tokens == 0


def test_settings_validation():
    from tledit_pipeline.settings import SettingsError

    for bad in (
        {"prefix_tokens": 0},
        {"max_new_tokens": -1},
        {"synthetic_sample": 0.0},
        {"synthetic_sample": 1.5},
        {"synthetic_batch": 0},
        {"synthetic_temperature": 0.0},
        {"synthetic_top_p": 0.0},
        {"synthetic_top_p": 1.5},
        {"synthetic_segment": 63},
    ):
        with pytest.raises(SettingsError):
            SyntheticSettings(**bad)
