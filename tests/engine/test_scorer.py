"""The Scorer: one right-padded or packed batch through the prior equals each window alone; candidates skip blocked tokens."""

import numpy as np
import pyarrow as pa

from tests.engine.test_scoring import TEXTS, docs_table
from tledit_pipeline.scorer import Scorer, tokenize
from tledit_pipeline.scoring import score_table
from tledit_pipeline.settings import ScoringSettings
from tledit_pipeline.windows import Batch, Window


def test_right_padding_needs_no_attention_mask(tiny_prior):
    """Causal attention keeps real tokens from seeing the padding after them: padded rows equal unpadded ones."""
    scorer = Scorer(tiny_prior, ScoringSettings(window=64, overlap=16, batch_tokens=4096))
    ids = tokenize(tiny_prior, ["A longer line of text that sets the padded width of the batch.", "Short one."])
    both = scorer.forward_batch(Batch(64, [[Window(0, 0, len(ids[0]), 1)], [Window(1, 0, len(ids[1]), 1)]]), ids)
    alone = scorer.forward_batch(Batch(len(ids[1]), [[Window(1, 0, len(ids[1]), 1)]]), ids)
    n = len(ids[1]) - 1
    np.testing.assert_allclose(both[0][-n:], alone[0], atol=1e-5)
    assert (both[1][-n:] == alone[1]).all()


def test_packed_rows_score_each_window_as_if_alone(tiny_prior):
    """Several windows in one row, position ids restarting at each and attention kept within each: every
    log-prob and candidate equals that window scored alone in a row of its own (float32, float tolerance)."""
    scorer = Scorer(tiny_prior, ScoringSettings(window=96, overlap=16, batch_tokens=4096))
    assert scorer.pack  # the tiny Llama runs SDPA attention, so its rows can be packed
    ids = tokenize(tiny_prior, TEXTS[:4] + ["x", "Fair is foul, and foul is fair."])
    seqs, offsets = scorer.sequences(ids)
    ws = [Window(i, 0, min(len(s), 96), offsets[i]) for i, s in enumerate(seqs)]
    ws = [w for w in ws if w.end > w.score_from]
    rows, row, used = [], [], 0
    for w in ws:  # as many windows per row as fit in 96 tokens
        if used + w.length > 96:
            rows.append(row)
            row, used = [], 0
        row.append(w)
        used += w.length
    rows.append(row)
    batch = Batch(96, rows)
    assert batch.packed and len(batch.windows) == len(ws)
    lp, top_ids, top_lp, padded = scorer.forward_batch(batch, seqs)
    assert padded == 96 * len(rows) and len(lp) == sum(w.end - w.score_from for w in ws)
    at = 0
    for w in batch.windows:
        one = scorer.forward_batch(Batch(w.length, [[w]]), seqs)
        n = w.end - w.score_from
        np.testing.assert_allclose(lp[at : at + n], one[0], atol=1e-5)
        np.testing.assert_allclose(top_lp[at : at + n], one[2], atol=1e-5)
        # Candidates agree wherever their log-probs are not tied (the first row after the start token is flat).
        distinct = np.diff(one[2], axis=1).min(axis=1) < -1e-4
        assert (top_ids[at : at + n][distinct] == one[1][distinct]).all()
        at += n


def test_packed_and_unpacked_scoring_agree_and_lose_no_token(tiny_prior, monkeypatch):
    """score_table with packing (short documents share rows) and without (a row per window): same scores,
    every token of every document present once."""
    import tledit_pipeline.packing as packing

    settings = ScoringSettings(window=64, overlap=16, batch_tokens=512)
    texts = TEXTS + ["word " * 90, "a", "Short one.", "Another short document here."]
    packed, stats = score_table(tiny_prior, "s", docs_table(texts), settings)
    monkeypatch.setattr(packing, "enable", lambda model: False)
    alone, alone_stats = score_table(tiny_prior, "s", docs_table(texts), settings)
    assert packed.select(["doc_id", "pos", "token_id"]).equals(alone.select(["doc_id", "pos", "token_id"]))
    ids = tokenize(tiny_prior, texts)
    assert packed.num_rows == sum(len(x) for x in ids) == stats.tokens
    np.testing.assert_allclose(
        packed["logprob"].to_numpy(zero_copy_only=False), alone["logprob"].to_numpy(zero_copy_only=False), atol=1e-5
    )
    assert stats.padded_tokens < alone_stats.padded_tokens  # packing removes padding
    assert stats.fed_tokens == alone_stats.fed_tokens


def test_batch_widths_are_a_few_shapes_and_scores_do_not_depend_on_them(tiny_prior, monkeypatch):
    """Row widths are multiples of WIDTH_STEP (never past the window): the kernels see a few shapes (each new
    one costs compiled code that stays in memory), and the scores equal the unpadded ones."""
    import tledit_pipeline.windows as windows

    settings = ScoringSettings(window=96, overlap=16, batch_tokens=4096)
    s = Scorer(tiny_prior, settings)
    seqs, offsets = s.sequences(tokenize(tiny_prior, TEXTS))
    for b in s.plan(seqs, offsets)[1]:
        assert b.width % windows.WIDTH_STEP == 0 or b.width == 96
    assert windows.row_width(90, 96) == 96 and windows.row_width(10, 96, least=0) == 64  # capped at the window
    padded, _ = score_table(tiny_prior, "s", docs_table(TEXTS), settings)
    monkeypatch.setattr(windows, "WIDTH_STEP", 1)
    monkeypatch.setattr(windows, "ROW_WIDTH", 1)
    exact, _ = score_table(tiny_prior, "s", docs_table(TEXTS), settings)
    np.testing.assert_allclose(
        padded["logprob"].to_numpy(zero_copy_only=False),
        exact["logprob"].to_numpy(zero_copy_only=False),
        atol=1e-5,
        equal_nan=True,
    )


def test_candidates_are_the_same_when_blocked_tokens_crowd_the_wide_topk(tiny_prior, monkeypatch):
    """WIDE = 0 sends every row with a blocked token in its top k down the masked fallback: same result."""
    import tledit_pipeline.scorer as scorer

    settings = ScoringSettings(window=64, overlap=16, batch_tokens=512, candidates=8)
    wide, _ = score_table(tiny_prior, "s", docs_table(TEXTS), settings)
    monkeypatch.setattr(scorer, "WIDE", 0)
    narrow, _ = score_table(tiny_prior, "s", docs_table(TEXTS), settings)
    # After the start token the tiny model's distribution is uniform (its embedding is the zeroed padding row):
    # a tie of every candidate, which the two paths may order differently. Every other row must agree.
    lps = np.array(wide["topk_logprobs"].to_pylist(), dtype=np.float64)
    tied = (lps == lps[:, :1]).all(axis=1)
    assert tied.sum() <= len(TEXTS)
    keep = pa.array(~tied)
    assert wide["topk_ids"].filter(keep).equals(narrow["topk_ids"].filter(keep))
    np.testing.assert_allclose(
        wide["logprob"].to_numpy(zero_copy_only=False),
        narrow["logprob"].to_numpy(zero_copy_only=False),
        atol=1e-6,
        equal_nan=True,
    )
