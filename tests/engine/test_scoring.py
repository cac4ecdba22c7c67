"""Scoring: batched, padded and windowed log-probs equal a plain unpadded forward of the same window."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tledit_pipeline.prior import document_start_id
from tledit_pipeline.scorer import tokenize
from tledit_pipeline.scoring import score_table
from tledit_pipeline.settings import ScoringSettings
from tledit_pipeline.windows import plan_windows

TEXTS = [
    "When shall we three meet again? In thunder, lightning, or in rain?",
    "Fair is foul, and foul is fair. " * 12,  # longer than one window below
    "ok",
    "Caf\u00e9 \u65e5\u672c\u8a9e \U0001f600 e\u0301 done.\r\nNext line.",
    "x",
]


def docs_table(texts):
    return pa.table({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts})


def reference_logprobs(prior, ids: np.ndarray, window: int, overlap: int, before: list[int] = ()) -> np.ndarray:
    """Per-document reference: `before` (start token, context) then the document, each window alone, unpadded,
    through the full causal LM; NaN where a document token has no left context."""
    seq = np.concatenate([np.asarray(before, dtype=np.int64), ids])
    off = len(before)
    out = np.full(len(ids), np.nan)
    for w in plan_windows(0, len(seq), window, overlap, first=max(off, 1)):
        x = torch.from_numpy(seq[w.start : w.end])[None]
        with torch.inference_mode():
            logp = torch.log_softmax(prior.model(input_ids=x).logits[0].float(), dim=-1)
        for j in range(w.score_from, w.end):
            out[j - off] = logp[j - w.start - 1, seq[j]].item()
    return out


@pytest.mark.parametrize("document_start", [True, False])
@pytest.mark.parametrize("batch_tokens", [64, 4096])
def test_batched_windowed_equals_unpadded(tiny_prior, batch_tokens, document_start):
    settings = ScoringSettings(window=48, overlap=16, batch_tokens=batch_tokens, candidates=8, document_start=document_start)
    table, stats = score_table(tiny_prior, "s", docs_table(TEXTS), settings)
    assert stats.windows > len(TEXTS) - 1  # the long document really was windowed
    ids = tokenize(tiny_prior, TEXTS)
    start = [document_start_id(tiny_prior.tokenizer)] if document_start else []
    for i, tok in enumerate(ids):
        rows = table.filter(pa.compute.equal(table["doc_id"], f"d{i}"))
        got = rows["logprob"].to_numpy(zero_copy_only=False).astype(np.float64)
        ref = reference_logprobs(tiny_prior, tok, 48, 16, before=start)
        assert rows.num_rows == len(tok)
        assert np.isnan(got[0]) == np.isnan(ref[0]) == (not document_start)  # the first token: scored after the start
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_every_token_is_scored_after_the_document_start_token(tiny_prior):
    table, stats = score_table(tiny_prior, "s", docs_table(TEXTS), ScoringSettings(window=32, overlap=8, batch_tokens=256))
    lp = table["logprob"].to_numpy(zero_copy_only=False)
    assert stats.tokens == stats.scored == table.num_rows == sum(len(t) for t in tokenize(tiny_prior, TEXTS))
    assert not np.isnan(lp).any() and (lp <= 1e-6).all()
    assert table["topk_ids"].null_count == 0  # the first token has candidates too
    assert set(table["shard"].to_pylist()) == {"s"}
    # The start token is read, never stored: rows are the document's own tokens, spans index its text.
    assert document_start_id(tiny_prior.tokenizer) == tiny_prior.tokenizer.convert_tokens_to_ids("<|endoftext|>")


def test_without_the_start_token_every_token_after_the_first_is_scored(tiny_prior):
    settings = ScoringSettings(window=32, overlap=8, batch_tokens=256, document_start=False)
    table, stats = score_table(tiny_prior, "s", docs_table(TEXTS), settings)
    pos = table["pos"].to_numpy()
    lp = table["logprob"].to_numpy(zero_copy_only=False)
    assert stats.tokens == table.num_rows and stats.scored == table.num_rows - len(TEXTS)
    assert np.isnan(lp[pos == 0]).all()
    assert not np.isnan(lp[pos > 0]).any()
    assert (lp[pos > 0] <= 1e-6).all()


def test_the_start_token_changes_the_scores_and_is_in_the_scoring_version(tiny_prior):
    on, _ = score_table(tiny_prior, "s", docs_table(TEXTS), ScoringSettings(window=48, overlap=16, batch_tokens=256))
    off, _ = score_table(
        tiny_prior, "s", docs_table(TEXTS), ScoringSettings(window=48, overlap=16, batch_tokens=256, document_start=False)
    )
    assert on["token_id"].equals(off["token_id"]) and on["char_start"].equals(off["char_start"])  # same rows, same spans
    a, b = on["logprob"].to_numpy(zero_copy_only=False), off["logprob"].to_numpy(zero_copy_only=False)
    assert np.nanmax(np.abs(a - b)) > 1e-3  # every position's context changed
    assert ScoringSettings().version() != ScoringSettings(document_start=False).version()


def test_candidates_are_replaceable_and_sorted(tiny_prior):
    table, _ = score_table(
        tiny_prior, "s", docs_table(TEXTS), ScoringSettings(window=64, overlap=16, batch_tokens=512, candidates=6)
    )
    rows = table.filter(pa.compute.greater(table["pos"], 0))
    ids = np.array(rows["topk_ids"].to_pylist())
    lps = np.array(rows["topk_logprobs"].to_pylist(), dtype=np.float64)
    assert ids.shape[1] == 6
    assert tiny_prior.replaceable[ids].all()  # never a special token or a byte fragment
    assert not np.isin(ids, tiny_prior.tokenizer.all_special_ids).any()
    assert (np.diff(lps, axis=1) <= 1e-3).all()  # best first (float16 storage)
    assert (lps <= 1e-3).all()


def test_scores_do_not_depend_on_batching_or_chunking(tiny_prior):
    a, _ = score_table(tiny_prior, "s", docs_table(TEXTS), ScoringSettings(window=48, overlap=16, batch_tokens=48))
    b, _ = score_table(
        tiny_prior, "s", docs_table(TEXTS), ScoringSettings(window=48, overlap=16, batch_tokens=4096), docs_per_chunk=2
    )
    assert a["token_id"].equals(b["token_id"])
    np.testing.assert_allclose(
        a["logprob"].to_numpy(zero_copy_only=False), b["logprob"].to_numpy(zero_copy_only=False), atol=1e-4, equal_nan=True
    )


def test_empty_input(tiny_prior):
    table, stats = score_table(tiny_prior, "s", docs_table([]), ScoringSettings(window=32, overlap=8, batch_tokens=64))
    assert table.num_rows == 0 and stats.documents == 0
    assert "topk_ids" in table.column_names


def test_literal_special_token_text_is_just_text(tiny_prior):
    text = "Human text that quotes <|endoftext|> literally, and goes on."
    table, stats = score_table(tiny_prior, "s", docs_table([text]), ScoringSettings(window=64, overlap=16, batch_tokens=256))
    assert stats.inexact_documents == 0
    eos = tiny_prior.tokenizer.eos_token_id
    assert eos not in table["token_id"].to_pylist()
    spans = zip(table["char_start"].to_pylist(), table["char_end"].to_pylist())
    assert "".join(text[s:e] for s, e in spans) == text


def test_partition_is_streamed_in_chunks_and_equals_the_in_memory_table(tiny_prior, tmp_path):
    from tledit_pipeline.lake import partition_digest, partition_file, partition_meta, read_partition, write_partition
    from tledit_pipeline.scoring import score_partition

    write_partition(tmp_path, "raw_corpus", "s", docs_table(TEXTS))
    settings = ScoringSettings(window=48, overlap=16, batch_tokens=256)
    whole, _ = score_table(tiny_prior, "s", docs_table(TEXTS), settings)
    # A chunk per document or two: the streamed path really streams.
    stats = score_partition(tiny_prior, tmp_path, "s", settings, meta={"raw_digest": "x"}, chars_per_chunk=100)
    got = read_partition(tmp_path, "token_scores", "s")
    assert pq.ParquetFile(partition_file(tmp_path, "token_scores", "s")).num_row_groups > 1
    assert got.column_names == whole.column_names
    assert got["doc_id"].equals(whole["doc_id"]) and got["token_id"].equals(whole["token_id"])
    np.testing.assert_allclose(
        got["logprob"].to_numpy(zero_copy_only=False), whole["logprob"].to_numpy(zero_copy_only=False), atol=1e-4, equal_nan=True
    )
    digest = partition_digest(tmp_path, "raw_corpus", "s")
    assert partition_meta(tmp_path, "token_scores", "s") == {
        "raw_digest": "x",
        "text_asset": "raw_corpus",
        "text_digest": digest,
        "first_scored": 0,
    }
    assert stats.documents == len(TEXTS) and stats.tokens == got.num_rows
    assert sum(stats.shares[f"prob_bin_{i:02d}"] for i in range(10)) == pytest.approx(1.0)
