"""SFT edits conditioned on the prompt: the prior reads a context field before the edited one.

The context changes the scores (every response token is scored after the prompt), never the rows: the
response's tokens, spans and text are what is stored and edited; the prompt passes through.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.engine.test_scoring import reference_logprobs
from tledit_pipeline.edited import edit_partition
from tledit_pipeline.lake import partition_meta, read_partition, write_partition
from tledit_pipeline.prior import document_start_id
from tledit_pipeline.scorer import tokenize
from tledit_pipeline.scoring import CONTEXT_SEPARATOR, ContextError, score_partition, score_table
from tledit_pipeline.settings import EditSettings, ScoringSettings
from tledit_pipeline.vocab import write_vocab

PROMPTS = ["Question one: what is fair?", None, "When shall we three meet again? " * 6, ""]
RESPONSES = [
    "Fair is foul, and foul is fair.",
    "In thunder, lightning, or in rain.",
    "When the hurlyburly's done, when the battle's lost and won. " * 3,  # with its prompt, longer than a window
    "Hover through the fog and filthy air.",
]
SCORING = ScoringSettings(window=48, overlap=16, batch_tokens=256, context_field="prompt")


def _table(with_context: bool) -> pa.Table:
    cols = {"doc_id": [f"q{i}" for i in range(len(RESPONSES))], "text": RESPONSES}
    return pa.table(cols | ({"context": pa.array(PROMPTS, pa.string())} if with_context else {}))


def _reference(prior, prompt: str | None, response: str) -> np.ndarray:
    """log P of each response token after start + prompt + separator, each window alone and unpadded."""
    before = [document_start_id(prior.tokenizer)] + (tokenize(prior, [prompt + CONTEXT_SEPARATOR])[0].tolist() if prompt else [])
    return reference_logprobs(prior, tokenize(prior, [response])[0], SCORING.window, SCORING.overlap, before=before)


def test_the_context_changes_the_scores_not_the_rows(tiny_prior):
    with_ctx, stats = score_table(tiny_prior, "s", _table(True), SCORING)
    alone, _ = score_table(tiny_prior, "s", _table(False), SCORING)
    for col in ("doc_id", "pos", "token_id", "char_start", "char_end", "whole"):
        assert with_ctx[col].equals(alone[col]), col  # the response's own tokens and spans
    assert stats.tokens == with_ctx.num_rows == sum(len(t) for t in tokenize(tiny_prior, RESPONSES))
    got = with_ctx["logprob"].to_numpy(zero_copy_only=False)
    ref_alone = alone["logprob"].to_numpy(zero_copy_only=False)
    doc = np.asarray(with_ctx["doc_id"].to_pylist())
    for i, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        rows = doc == f"q{i}"
        # The same as start + prompt + response through the model window by window (the third prompt does
        # not fit in a window: its last `overlap` tokens are read, like any later window's context).
        np.testing.assert_allclose(got[rows], _reference(tiny_prior, prompt, response), atol=1e-4, rtol=0)
        if prompt:
            assert np.abs(got[rows] - ref_alone[rows]).max() > 1e-3, i  # the prompt changed the scores
        else:  # no prompt (null or empty): scored after the start token alone, as without a context field
            np.testing.assert_allclose(got[rows], ref_alone[rows], atol=1e-5)
    assert not np.isnan(got).any()


def _lake(tmp_path, prompts) -> None:
    raw = pa.table(
        {
            "shard": ["s"] * len(RESPONSES),
            "doc_id": [f"q{i}" for i in range(len(RESPONSES))],
            "text": RESPONSES,
            "source_prompt": prompts,
        }
    )
    write_partition(
        tmp_path,
        "raw_corpus",
        "s",
        raw,
        meta={"source_columns": [["id", "doc_id"], ["prompt", "source_prompt"], ["response", "text"]]},
    )


def test_score_partition_reads_the_prompt_from_raw_corpus_and_edits_only_the_response(tiny_prior, tmp_path):
    _lake(tmp_path, pa.array(PROMPTS, pa.string()))
    write_vocab(tmp_path, tiny_prior)
    score_partition(tiny_prior, tmp_path, "s", SCORING, meta={"fingerprint": tiny_prior.fingerprint})
    stored = read_partition(tmp_path, "token_scores", "s")
    in_memory, _ = score_table(tiny_prior, "s", _table(True), SCORING)
    np.testing.assert_allclose(
        stored["logprob"].to_numpy(zero_copy_only=False), in_memory["logprob"].to_numpy(zero_copy_only=False), atol=1e-5
    )
    stats = edit_partition(tmp_path, "s", EditSettings(threshold=0.003, exclude_original=True))
    assert stats.changed > 0
    edited = read_partition(tmp_path, "edited_corpus", "s")
    raw = read_partition(tmp_path, "raw_corpus", "s")
    assert edited["doc_id"].equals(raw["doc_id"])
    assert edited["text"].to_pylist() != raw["text"].to_pylist()  # the responses changed
    assert "source_prompt" not in edited.column_names  # the prompt is never edited: it stays in raw_corpus
    # A later generation keeps the same prompt as context: scoring generation 1's text reads it again.
    score_partition(tiny_prior, tmp_path, "s", SCORING, meta={"fingerprint": tiny_prior.fingerprint}, generation=1)
    assert partition_meta(tmp_path, "token_scores_g1", "s")["text_asset"] == "edited_corpus"
    g1 = read_partition(tmp_path, "token_scores_g1", "s")
    alone = SCORING.__class__(window=48, overlap=16, batch_tokens=256)
    g1_alone, _ = score_table(tiny_prior, "s", edited.select(["doc_id", "text"]), alone)
    assert g1["token_id"].equals(g1_alone["token_id"])
    assert np.abs(g1["logprob"].to_numpy(zero_copy_only=False) - g1_alone["logprob"].to_numpy(zero_copy_only=False)).max() > 1e-3


def test_a_missing_or_non_text_context_field_is_a_clear_error(tiny_prior, tmp_path):
    _lake(tmp_path, pa.array(['{"a":1}', None, '"ok"', '"x"'], pa.json_()))  # a JSON column: one value is an object
    with pytest.raises(ContextError, match=r"shard 's', document 'q0': context field 'prompt' holds a dict, not text"):
        score_partition(tiny_prior, tmp_path, "s", SCORING)
    with pytest.raises(ContextError, match=r"shard 's' has no field 'title' to use as context"):
        score_partition(
            tiny_prior, tmp_path, "s", ScoringSettings(window=48, overlap=16, batch_tokens=256, context_field="title")
        )


def test_the_context_field_is_in_the_scoring_version():
    assert "context=prompt" in SCORING.version()
    assert ScoringSettings().version() != SCORING.version()
