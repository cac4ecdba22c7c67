"""The edited corpus of a shard: real scores from the tiny prior, the edit rule, and the text rebuild."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest

from tledit_pipeline.edit import eligible
from tledit_pipeline.edited import EDITED_SCHEMA, ScoresMismatch, edit_shard
from tledit_pipeline.scorer import tokenize
from tledit_pipeline.scoring import score_table
from tledit_pipeline.settings import EditSettings, ScoringSettings

HUMAN = [
    "When shall we three meet again? In thunder, lightning, or in rain?",
    "Caf\u00e9 \u65e5\u672c\u8a9e \U0001f600 e\u0301 done.\r\nNext line.",
    "x",
    "Fair is foul, and foul is fair: hover through the fog and filthy air. " * 3,
]
PROMPTS = ["When shall", "Fair is", "The quick", "Caf\u00e9", "Is this"]
SCORING = ScoringSettings(window=48, overlap=16, batch_tokens=192)


def _generate(prior, prompt: str, n: int, seed: int) -> str:
    """Text the tiny prior itself finds likely (sampled at a low temperature): it has tokens with P >= p."""
    import torch

    allowed = np.array(
        [bool(b) and ok and all(c >= 0x20 or c in (0x09, 0x0A) for c in b) for b, ok in zip(prior.token_bytes, prior.replaceable)]
    )
    ids = tokenize(prior, [prompt])[0].tolist()
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        for _ in range(n):
            logits = prior.model(input_ids=torch.tensor([ids])).logits[0, -1]
            logits[~torch.from_numpy(allowed)] = -float("inf")
            ids.append(int(torch.multinomial(torch.softmax(logits / 0.5, -1), 1, generator=gen)))
    return prior.tokenizer.decode(ids)


@pytest.fixture(scope="module")
def raw(tiny_prior) -> pa.Table:
    texts = HUMAN + [_generate(tiny_prior, p, 50, i) for i, p in enumerate(PROMPTS)]
    assert all(t.strip() and "\x00" not in t for t in texts)
    return pa.table({"doc_id": [f"doc-{i:02d}" for i in range(len(texts))], "text": texts})


@pytest.fixture(scope="module")
def scores(tiny_prior, raw) -> pa.Table:
    table, stats = score_table(tiny_prior, "s", raw, SCORING)
    assert stats.inexact_documents == 0
    return table


@pytest.fixture(scope="module")
def vocab(tiny_prior) -> list:
    return tiny_prior.vocab_table().column("text").to_pylist()


def _edit(raw, scores, vocab, **kw):
    return edit_shard("s", raw, scores, vocab, EditSettings(**kw))


def _eligible_counts(scores, threshold):
    lp = scores["logprob"].to_numpy(zero_copy_only=False).astype(np.float32)
    el = eligible(lp, scores["whole"].to_numpy(zero_copy_only=False), scores["pos"].to_numpy(), threshold)
    return int(el.sum())


def test_fixture_has_confident_tokens(scores):
    # The generated documents are what the prior expects, so the edit rule has work to do.
    assert _eligible_counts(scores, 0.5) >= 20


@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.5, 0.99, 1.0])
def test_output_shape_and_unchanged_docs(raw, scores, vocab, threshold):
    out, stats = _edit(raw, scores, vocab, threshold=threshold)
    assert out.schema == EDITED_SCHEMA
    assert out.num_rows == raw.num_rows == stats.documents
    assert out["doc_id"].to_pylist() == raw["doc_id"].to_pylist()
    assert set(out["shard"].to_pylist()) == {"s"}
    assert sum(out["n_tokens"].to_pylist()) == stats.tokens == scores.num_rows
    assert sum(out["n_eligible"].to_pylist()) == stats.eligible
    assert sum(out["n_changed"].to_pylist()) == stats.changed <= stats.eligible
    for row, before in zip(out.to_pylist(), raw["text"].to_pylist()):
        assert row["n_changed"] <= row["n_eligible"] < max(row["n_tokens"], 1)
        row["text"].encode("utf-8")  # valid UTF-8 (no lone surrogates)
        if row["n_changed"] == 0:
            assert row["text"].encode("utf-8") == before.encode("utf-8")


def test_only_eligible_token_spans_change(raw, scores, vocab):
    threshold = 0.3
    out, stats = _edit(raw, scores, vocab, threshold=threshold, seed=3)
    assert stats.changed > 0
    lp = scores["logprob"].to_numpy(zero_copy_only=False).astype(np.float32)
    el = eligible(lp, scores["whole"].to_numpy(zero_copy_only=False), scores["pos"].to_numpy(), threshold)
    doc_ids = scores["doc_id"].to_pylist()
    starts, ends = scores["char_start"].to_numpy(), scores["char_end"].to_numpy()
    for doc_id, before, after in zip(raw["doc_id"].to_pylist(), raw["text"].to_pylist(), out["text"].to_pylist()):
        rows = [i for i, d in enumerate(doc_ids) if d == doc_id and el[i]]
        # The text between eligible spans must survive verbatim and in order.
        at, gaps = 0, []
        for i in rows:
            gaps.append(before[at : starts[i]])
            at = ends[i]
        gaps.append(before[at:])
        pattern = "(?s)" + ".*?".join(re.escape(g) for g in gaps)
        assert re.fullmatch(pattern, after), doc_id


def test_edit_is_deterministic(raw, scores, vocab):
    a, sa = _edit(raw, scores, vocab, threshold=0.3, seed=7)
    b, sb = _edit(raw, scores, vocab, threshold=0.3, seed=7)
    assert a.equals(b)
    assert sa == sb


def test_edit_does_not_depend_on_batching_or_doc_order(tiny_prior, raw, scores, vocab):
    order = list(range(raw.num_rows))[::-1]
    reordered = raw.take(pa.array(order))
    other, _ = score_table(tiny_prior, "s", reordered, ScoringSettings(window=48, overlap=16, batch_tokens=48), docs_per_chunk=2)
    assert other["doc_id"].to_pylist() != scores["doc_id"].to_pylist()  # the rows really are in another order
    for threshold in (0.3, 0.99):
        a, _ = _edit(raw, scores, vocab, threshold=threshold, seed=11)
        b, _ = _edit(raw, other, vocab, threshold=threshold, seed=11)
        assert a.equals(b)
        # Editing a reordered raw table gives the same documents, reordered.
        c, _ = _edit(reordered, other, vocab, threshold=threshold, seed=11)
        assert c.equals(a.take(pa.array(order)))


def test_edit_of_one_doc_does_not_depend_on_its_neighbours(raw, scores, vocab):
    full, _ = _edit(raw, scores, vocab, threshold=0.3, seed=5)
    target = raw["doc_id"].to_pylist()[-1]
    one_raw = raw.filter(pa.compute.equal(raw["doc_id"], target))
    one_scores = scores.filter(pa.compute.equal(scores["doc_id"], target))
    alone, _ = _edit(one_raw, one_scores, vocab, threshold=0.3, seed=5)
    assert alone["text"].to_pylist() == [full["text"].to_pylist()[-1]]


def test_lower_threshold_gives_more_eligible_tokens(raw, scores, vocab):
    _, low = _edit(raw, scores, vocab, threshold=0.05)
    _, mid = _edit(raw, scores, vocab, threshold=0.5)
    _, high = _edit(raw, scores, vocab, threshold=0.99)
    assert low.eligible > mid.eligible >= high.eligible
    assert low.eligible > high.eligible
    assert high.eligible == _eligible_counts(scores, 0.99)
    assert 0.0 <= high.eligible_share <= mid.eligible_share <= low.eligible_share <= 1.0


def test_threshold_one_changes_nothing_in_practice(raw, scores, vocab):
    out, stats = _edit(raw, scores, vocab, threshold=1.0)
    assert stats.changed == 0
    assert out["text"].to_pylist() == raw["text"].to_pylist()


def test_seed_changes_some_edit(raw, scores, vocab):
    base, s0 = _edit(raw, scores, vocab, threshold=0.3, seed=0)
    assert s0.eligible > 0
    others = [_edit(raw, scores, vocab, threshold=0.3, seed=s)[0] for s in (1, 2, 3)]
    assert any(o["text"].to_pylist() != base["text"].to_pylist() for o in others)
    # Eligibility itself never depends on the seed.
    assert all(o["n_eligible"].to_pylist() == base["n_eligible"].to_pylist() for o in others)


def test_top_k_one_has_no_randomness(raw, scores, vocab):
    """With k = 1 an eligible token becomes the prior's top candidate whatever the seed."""
    out, stats = _edit(raw, scores, vocab, threshold=0.05, top_k=1, seed=0)
    again, _ = _edit(raw, scores, vocab, threshold=0.05, top_k=1, seed=99)
    assert out.equals(again)  # no randomness left
    assert stats.changed <= stats.eligible


def test_missing_scores_raise(raw, scores, vocab):
    extra = pa.concat_tables([raw, pa.table({"doc_id": ["not-scored"], "text": ["hello there"]})])
    with pytest.raises(ScoresMismatch, match="not-scored") as info:
        _edit(extra, scores, vocab)
    assert "'s'" in str(info.value)
    dropped = scores.filter(pa.compute.not_equal(scores["doc_id"], "doc-00"))
    with pytest.raises(ScoresMismatch, match="doc-00"):
        _edit(raw, dropped, vocab)


def test_top_k_above_stored_candidates_raises(raw, tiny_prior, vocab):
    small = raw.slice(0, 2)
    few, _ = score_table(tiny_prior, "s", small, ScoringSettings(window=48, overlap=16, batch_tokens=192, candidates=2))
    with pytest.raises(ScoresMismatch, match="top_k=8"):
        _edit(small, few, vocab, top_k=8)
    out, _ = _edit(small, few, vocab, top_k=2, threshold=0.05)
    assert out.num_rows == 2


# ---------------------------------------------------------------- low-probability deletion


def _low(scores, q):
    lp = scores["logprob"].to_numpy(zero_copy_only=False).astype(np.float64)
    return scores["whole"].to_numpy(zero_copy_only=False) & ~np.isnan(lp) & (lp < np.log(q))


def test_drop_below_cuts_exactly_the_low_probability_spans(raw, scores, vocab):
    q = 0.003  # about the tiny random prior's 1 / vocabulary: a good share of human tokens lies below it
    out, stats = _edit(raw, scores, vocab, threshold=1.0, drop_below=q)  # nothing resampled: deletion alone
    low = _low(scores, q)
    assert stats.deleted == int(low.sum()) > 0 and stats.changed == 0
    assert sum(out["n_deleted"].to_pylist()) == stats.deleted
    assert stats.deleted_share == pytest.approx(stats.deleted / stats.scored)
    doc_ids = np.asarray(scores["doc_id"].to_pylist(), dtype=object)
    starts, ends = scores["char_start"].to_numpy(), scores["char_end"].to_numpy()
    for doc_id, before, after in zip(raw["doc_id"].to_pylist(), raw["text"].to_pylist(), out["text"].to_pylist()):
        cut = np.flatnonzero((doc_ids == doc_id) & low)
        expected, at = [], 0
        for i in cut:  # the original with exactly those spans removed: every other byte in place
            expected.append(before[at : starts[i]])
            at = ends[i]
        expected.append(before[at:])
        assert after.encode("utf-8") == "".join(expected).encode("utf-8"), doc_id


def test_drop_below_combines_with_resampling(raw, scores, vocab):
    plain, sp = _edit(raw, scores, vocab, threshold=0.3, seed=3)
    both, sb = _edit(raw, scores, vocab, threshold=0.3, seed=3, drop_below=0.003)
    assert sb.eligible == sp.eligible and sb.changed == sp.changed  # the same resampling draws
    assert sb.deleted > 0 and sp.deleted == 0 and sum(plain["n_deleted"].to_pylist()) == 0
    for row in both.to_pylist():
        assert row["n_changed"] <= row["n_eligible"] and row["n_eligible"] + row["n_deleted"] <= row["n_scored"]
    assert both["text"].to_pylist() != plain["text"].to_pylist()


def test_drop_below_off_is_the_plain_edit(raw, scores, vocab):
    a, _ = _edit(raw, scores, vocab, threshold=0.3, seed=2)
    b, _ = _edit(raw, scores, vocab, threshold=0.3, seed=2, drop_below=0.0)
    assert a.equals(b)
    assert EditSettings(drop_below=0.0).version() == EditSettings().version()
    assert EditSettings(drop_below=0.001).version() != EditSettings(drop_below=0.002).version() != EditSettings().version()


@pytest.mark.parametrize("q", [-0.1, 0.99, 1.0])
def test_drop_below_must_stay_under_the_threshold(q):
    from tledit_pipeline.settings import SettingsError

    with pytest.raises(SettingsError, match="drop_below"):
        EditSettings(threshold=0.99, drop_below=q)


def test_n_scored_counts_the_tokens_with_a_score(tiny_prior, raw, scores, vocab):
    out, stats = _edit(raw, scores, vocab)
    assert out["n_scored"].to_pylist() == out["n_tokens"].to_pylist()  # every token, after the start token
    assert stats.scored == stats.tokens
    off, _ = score_table(tiny_prior, "s", raw, ScoringSettings(window=48, overlap=16, batch_tokens=192, document_start=False))
    out_off, stats_off = _edit(raw, off, vocab)
    assert out_off["n_scored"].to_pylist() == [n - 1 for n in out_off["n_tokens"].to_pylist()]
    assert stats_off.scored == stats_off.tokens - raw.num_rows


# ---------------------------------------------------------------- generations


def test_a_later_generation_draws_fresh_randomness(raw, scores, vocab):
    """Generation g >= 2 has its own keyed stream: the same scores do not repeat generation 1's draws."""
    g1, s1 = edit_shard("s", raw, scores, vocab, EditSettings(threshold=0.05, seed=4))
    again, _ = edit_shard("s", raw, scores, vocab, EditSettings(threshold=0.05, seed=4), generation=1)
    g2, s2 = edit_shard("s", raw, scores, vocab, EditSettings(threshold=0.05, seed=4), generation=2)
    g2b, _ = edit_shard("s", raw, scores, vocab, EditSettings(threshold=0.05, seed=4), generation=2)
    assert g1.equals(again) and g2.equals(g2b)  # each a pure function of its inputs
    assert s1.eligible == s2.eligible and g1["text"].to_pylist() != g2["text"].to_pylist()
