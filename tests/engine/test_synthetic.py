"""The synthetic baseline: deterministic temperature-1 samples of the tiny prior, with their log-probs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tledit_pipeline.scoring import tokenize
from tledit_pipeline.settings import SyntheticSettings
from tledit_pipeline.synthetic import SYNTHETIC_SCHEMA, in_sample, plan_lengths, synthesize

DOCS = pa.table(
    {
        "doc_id": ["a", "b", "c", "d", "e"],
        "text": [
            "When shall we three meet again? In thunder, lightning, or in rain? " * 3,
            "Fair is foul, and foul is fair: hover through the fog and filthy air.",
            "The quick brown fox jumps over the lazy dog.",
            "x",
            "Caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001F600 r\u00e9sum\u00e9 and more words after it.",
        ],
    }
)


def _settings(**kw) -> SyntheticSettings:
    return SyntheticSettings(**({"prefix_tokens": 6, "max_new_tokens": 20, "synthetic_sample": 1.0} | kw))


def test_plan_lengths():
    s = SyntheticSettings(prefix_tokens=32, max_new_tokens=256)
    assert plan_lengths(1000, s, 2048) == (32, 256)  # cap
    assert plan_lengths(100, s, 2048) == (32, 68)  # to the document's length
    assert plan_lengths(20, s, 2048) == (10, 10)  # a short document: the prior writes at least half
    assert plan_lengths(1, s, 2048) == (1, 0)
    assert plan_lengths(1000, s, 100) == (32, 68)  # never past the prior's context


def test_rows_lengths_and_logprobs(tiny_prior):
    table, stats = synthesize(tiny_prior, "s1", DOCS, _settings())
    assert table.schema == SYNTHETIC_SCHEMA
    assert table.column("doc_id").to_pylist() == DOCS.column("doc_id").to_pylist()  # same ids, raw order
    assert set(table.column("shard").to_pylist()) == {"s1"}
    ids = tokenize(tiny_prior, DOCS.column("text").to_pylist())
    for row, raw_ids in zip(table.to_pylist(), ids):
        assert row["raw_tokens"] == len(raw_ids)
        assert (row["prefix_tokens"], row["target_tokens"]) == plan_lengths(len(raw_ids), _settings(), tiny_prior.context_length)
        assert row["new_tokens"] == len(row["token_ids"]) == len(row["logprobs"]) <= row["target_tokens"]
        if row["ended"] == "length":
            assert row["new_tokens"] == row["target_tokens"]
        assert all(lp <= 0 for lp in row["logprobs"])
        assert all(tiny_prior.token_bytes[t] is not None for t in row["token_ids"])  # never a control token
        # The text is the human prefix followed by the continuation; the reference is raw at the same length.
        prefix = b"".join(tiny_prior.token_bytes[t] for t in raw_ids[: row["prefix_tokens"]]).decode("utf-8", "replace")
        assert row["text"].startswith(prefix.rstrip("\ufffd"))
        ref = b"".join(tiny_prior.token_bytes[t] for t in raw_ids[: row["prefix_tokens"] + row["new_tokens"]])
        assert row["reference_text"] == ref.decode("utf-8", "replace")
    d = table.to_pylist()[3]
    assert (d["prefix_tokens"], d["new_tokens"], d["ended"], d["text"]) == (1, 0, "nothing_to_generate", "x")
    assert stats.sampled == stats.documents == 5
    assert stats.new_tokens == sum(table.column("new_tokens").to_pylist()) > 0


def test_logprobs_are_the_priors_at_temperature_one(tiny_prior):
    """Re-scoring the generated text teacher-forced gives back the recorded log-probs."""
    import torch

    table, _ = synthesize(tiny_prior, "s1", DOCS.slice(0, 1), _settings())
    row = table.to_pylist()[0]
    prefix = tokenize(tiny_prior, DOCS.column("text").to_pylist()[:1])[0][: row["prefix_tokens"]]
    seq = torch.tensor(np.concatenate([prefix, row["token_ids"]]))[None]
    with torch.inference_mode():
        logp = torch.log_softmax(tiny_prior.model(input_ids=seq).logits[0].float(), -1)
    p = len(prefix)
    expected = logp[p - 1 : -1].gather(1, seq[0, p:, None])[:, 0].numpy()
    np.testing.assert_allclose(row["logprobs"], expected, atol=1e-4)


def test_deterministic_and_independent_of_batch_size(tiny_prior):
    one, _ = synthesize(tiny_prior, "s1", DOCS, _settings(synthetic_batch=1))
    again, _ = synthesize(tiny_prior, "s1", DOCS, _settings(synthetic_batch=1))
    many, _ = synthesize(tiny_prior, "s1", DOCS, _settings(synthetic_batch=5))
    assert one.equals(again)
    assert one.column("token_ids").to_pylist() == many.column("token_ids").to_pylist()
    np.testing.assert_allclose(
        np.concatenate(one.column("logprobs").to_pylist()), np.concatenate(many.column("logprobs").to_pylist()), atol=1e-4
    )
    other_seed, _ = synthesize(tiny_prior, "s1", DOCS, _settings(synthetic_seed=1))
    assert other_seed.column("token_ids").to_pylist() != one.column("token_ids").to_pylist()


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

    for bad in ({"prefix_tokens": 0}, {"max_new_tokens": 0}, {"synthetic_sample": 0.0}, {"synthetic_sample": 1.5}, {"synthetic_batch": 0}):
        with pytest.raises(SettingsError):
            SyntheticSettings(**bad)
