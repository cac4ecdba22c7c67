"""The Scorer: one right-padded batch through the prior equals each window alone; candidates skip blocked tokens."""

import numpy as np
import pyarrow as pa

from tests.engine.test_scoring import TEXTS, docs_table
from tledit_pipeline.scorer import Scorer, tokenize
from tledit_pipeline.scoring import score_table
from tledit_pipeline.settings import ScoringSettings
from tledit_pipeline.windows import Window


def test_right_padding_needs_no_attention_mask(tiny_prior):
    """Causal attention keeps real tokens from seeing the padding after them: padded rows equal unpadded ones."""
    scorer = Scorer(tiny_prior, ScoringSettings(window=64, overlap=16, batch_tokens=4096))
    ids = tokenize(tiny_prior, ["A longer line of text that sets the padded width of the batch.", "Short one."])
    both = scorer.forward_batch([Window(0, 0, len(ids[0]), 1), Window(1, 0, len(ids[1]), 1)], ids)
    alone = scorer.forward_batch([Window(1, 0, len(ids[1]), 1)], ids)
    n = len(ids[1]) - 1
    np.testing.assert_allclose(both[0][-n:], alone[0], atol=1e-5)
    assert (both[1][-n:] == alone[1]).all()


def test_batch_widths_are_a_few_shapes_and_scores_do_not_depend_on_them(tiny_prior, monkeypatch):
    """Widths are padded to a multiple of WIDTH_STEP (never past the window): the kernels see a few shapes
    (each new one costs compiled code that stays in memory), and the scores equal the unpadded ones."""
    import tledit_pipeline.scorer as scorer

    settings = ScoringSettings(window=96, overlap=16, batch_tokens=4096)
    ids = tokenize(tiny_prior, ["Short one.", "A longer line of text that sets the padded width of the batch."])
    s = Scorer(tiny_prior, settings)
    for batch in ([Window(0, 0, len(ids[0]), 1)], [Window(0, 0, len(ids[0]), 1), Window(1, 0, len(ids[1]), 1)]):
        assert s.hidden(batch, ids)[2] == scorer.WIDTH_STEP * len(batch)
    assert s.hidden([Window(0, 0, 90, 1)], [np.arange(100)])[2] == 96  # capped at the window, not 128
    padded, _ = score_table(tiny_prior, "s", docs_table(TEXTS), settings)
    monkeypatch.setattr(scorer, "WIDTH_STEP", 1)
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
