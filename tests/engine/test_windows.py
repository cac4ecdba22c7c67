"""Window planning and batch packing: full coverage with left context, bounded padded batches."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tledit_pipeline.settings import ScoringSettings, SettingsError
from tledit_pipeline.windows import WIDTH_STEP, Window, pack_batches, plan_windows


@st.composite
def plans(draw, min_overlap: int = 1):
    window = draw(st.integers(min_value=max(2, min_overlap + 1), max_value=300))
    overlap = draw(st.integers(min_value=min_overlap, max_value=window - 1))  # ScoringSettings: [1, window)
    n = draw(st.integers(min_value=0, max_value=2500))
    ScoringSettings(window=window, overlap=overlap, batch_tokens=window)  # a valid configuration
    return n, window, overlap


@given(plans())
@settings(max_examples=300, deadline=None)
def test_plan_covers_every_scored_position_exactly_once(plan):
    n, window, overlap = plan
    ws = plan_windows(3, n, window, overlap)
    if n < 2:
        assert ws == []
        return
    counts = Counter(p for w in ws for p in range(w.score_from, w.end))
    assert 0 not in counts
    assert sorted(counts) == list(range(1, n))
    assert set(counts.values()) == {1}
    assert ws[0].start == 0 and ws[0].score_from == 1
    assert ws[-1].end == n
    for w in ws:
        assert w.doc == 3
        assert 0 <= w.start < w.score_from < w.end <= n or (overlap == 0 and w.start == w.score_from)
        assert w.length == w.end - w.start <= window
    for prev, w in zip(ws, ws[1:]):
        assert w.score_from == prev.end  # scoring continues right where the previous window stopped
        assert w.score_from - w.start >= overlap  # left context re-read, not scored again
        assert w.start >= prev.start  # progress


@given(plans(min_overlap=1))
@settings(max_examples=200, deadline=None)
def test_every_scored_token_has_left_context_in_its_window(plan):
    n, window, overlap = plan
    for w in plan_windows(0, n, window, overlap):
        assert w.score_from - w.start >= 1
        if w.start > 0:
            assert w.score_from - w.start >= overlap


@given(plans(), st.integers(min_value=0, max_value=700))
@settings(max_examples=300, deadline=None)
def test_a_context_before_the_document_is_read_never_scored(plan, first):
    """A sequence of `first` context tokens (start token, prompt) then the document: every document token
    is scored exactly once, with the whole context when it fits in a window, else its last `overlap` tokens."""
    n, window, overlap = plan
    total = first + n
    ws = plan_windows(0, total, window, overlap, first=first)
    scored_from = max(first, 1)
    if total <= scored_from:
        assert ws == []
        return
    counts = Counter(p for w in ws for p in range(w.score_from, w.end))
    assert sorted(counts) == list(range(scored_from, total)) and set(counts.values()) == {1}
    assert ws[0].score_from == scored_from
    assert ws[0].start == (0 if scored_from < window else scored_from - overlap)
    for w in ws:
        assert w.start < w.score_from < w.end <= total and w.length <= window
        if w.start > 0:
            assert w.score_from - w.start >= overlap


def test_window_count_is_minimal_for_the_stride():
    # 1000 tokens, windows of 100 re-reading 20: the first scores 99, each later one 80.
    ws = plan_windows(0, 1000, 100, 20)
    assert len(ws) == 1 + int(np.ceil((1000 - 100) / 80))
    assert ws[1] == Window(0, 80, 180, 100)


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_docs_get_no_windows(n):
    assert plan_windows(0, n, 16, 4) == []


def test_short_doc_is_one_window():
    assert plan_windows(5, 10, 16, 4) == [Window(5, 0, 10, 1)]
    assert plan_windows(5, 16, 16, 4) == [Window(5, 0, 16, 1)]


def test_overlap_zero_still_gives_every_scored_token_context():
    try:
        ScoringSettings(window=4, overlap=0, batch_tokens=4)
    except SettingsError:
        return  # also a fix: overlap=0 refused up front
    for w in plan_windows(0, 10, 4, 0):
        assert w.score_from > w.start, w


def test_overlap_zero_scores_match_an_unwindowed_pass_on_the_first_window_token(tiny_prior):
    import torch

    from tledit_pipeline.scorer import tokenize
    from tledit_pipeline.scoring import score_table

    text = "Fair is foul, and foul is fair. " * 6
    ids = tokenize(tiny_prior, [text])[0]
    try:
        cfg = ScoringSettings(window=16, overlap=0, batch_tokens=64)
    except SettingsError:
        return  # also a fix: overlap=0 refused up front
    table, _ = score_table(tiny_prior, "s", pa.table({"doc_id": ["a"], "text": [text]}), cfg)
    got = table["logprob"].to_numpy(zero_copy_only=False)
    # Reference for token 16 (first scored token of window 2): the model given exactly token 15 as context,
    # which is the least context a correct plan would use.
    with torch.inference_mode():
        logp = torch.log_softmax(tiny_prior.model(input_ids=torch.from_numpy(ids[15:17])[None]).logits[0], -1)
    assert abs(got[16] - logp[0, ids[16]].item()) < 1e-3


# ---------------------------------------------------------------- packing


@st.composite
def window_sets(draw):
    window = draw(st.integers(min_value=2, max_value=128))
    overlap = draw(st.integers(min_value=0, max_value=window - 2))
    lengths = draw(st.lists(st.integers(min_value=0, max_value=600), min_size=0, max_size=25))
    budget = draw(st.integers(min_value=window, max_value=window * 12))
    ws = [w for d, n in enumerate(lengths) for w in plan_windows(d, n, window, overlap)]
    return ws, budget


@given(window_sets(), st.booleans())
@settings(max_examples=300, deadline=None)
def test_pack_batches_respects_budget_and_keeps_every_window(case, pack):
    ws, budget = case
    window = max([w.length for w in ws], default=2)
    batches = pack_batches(ws, budget, window, pack=pack)
    flat = [w for b in batches for w in b.windows]
    assert Counter(flat) == Counter(ws)  # each window exactly once
    assert all(b.rows and all(b.rows) for b in batches)  # no empty batches or rows
    for b in batches:
        assert b.padded_tokens <= budget or len(b.rows) == 1
        for row in b.rows:
            assert sum(w.length for w in row) <= b.width  # the windows fit their row
            assert pack or len(row) == 1
        assert b.width <= window or len(b.rows) == 1 and b.width == b.rows[0][0].length
        assert b.width % WIDTH_STEP == 0 or b.width == window or b.width == b.rows[0][0].length


def test_pack_batches_oversized_window_is_alone():
    big = Window(0, 0, 100, 1)
    small = [Window(d, 0, 10, 1) for d in range(1, 4)]
    batches = pack_batches([*small, big], 50, window=100, pack=False, step=1)
    assert batches[0].rows == [[big]]
    assert sorted(w.doc for b in batches[1:] for w in b.windows) == [1, 2, 3]
    assert all(b.padded_tokens <= 50 for b in batches[1:])


def test_short_windows_share_rows_and_fill_long_rows_slack():
    """Best-fit decreasing: short windows fill the rounding slack of a long window's row, then rows of their own."""
    long = Window(0, 0, 1000, 1)  # its row is 1024 wide: 24 tokens of room
    short = [Window(d, 0, 12, 1) for d in range(1, 40)]
    batches = pack_batches([long, *short], 8192, window=2048)
    first = batches[0]
    assert first.width == 1024 and first.rows[0][0] == long and [w.length for w in first.rows[0][1:]] == [12, 12]
    rest = [row for b in batches[1:] for row in b.rows]
    assert sum(len(r) for r in rest) == 37 and len(rest) == 1  # 37 x 12 tokens in one row opened at ROW_WIDTH,
    assert batches[1].width == 448  # which ends as wide as they are, rounded up to 64
    padding = sum(b.padded_tokens for b in batches) - sum(w.length for w in [long, *short])
    assert padding == 448 - 37 * 12
    unpacked = pack_batches([long, *short], 8192, window=2048, pack=False)
    assert all(len(row) == 1 for b in unpacked for row in b.rows)
    assert sum(b.padded_tokens for b in unpacked) == 1024 + 39 * 64


def test_pack_batches_empty():
    assert pack_batches([], 64) == []


@pytest.mark.parametrize("pack", [True, False])
def test_pack_batches_is_deterministic_regardless_of_input_order(pack):
    ws = [w for d, n in enumerate([50, 7, 120, 33, 2, 90]) for w in plan_windows(d, n, 32, 8)]
    rng = np.random.default_rng(0)
    shuffled = [ws[i] for i in rng.permutation(len(ws))]
    assert pack_batches(ws, 100, 32, pack) == pack_batches(shuffled, 100, 32, pack)
