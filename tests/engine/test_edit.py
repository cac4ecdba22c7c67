"""The edit rule: eligibility, the keyed random stream and the top-k resample."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tledit_pipeline.edit import apply_edit_rule, doc_key, eligible, keyed_uniform, resample
from tledit_pipeline.settings import EditSettings

K = 8


def synthetic(n_docs: int = 6, n_tok: int = 60, seed: int = 0):
    """Score-like arrays for a few documents: probabilities spread over [0, 1], some near 1."""
    rng = np.random.default_rng(seed)
    n = n_docs * n_tok
    pos = np.tile(np.arange(n_tok), n_docs)
    keys = np.repeat(np.array([doc_key(f"doc-{d}") for d in range(n_docs)], dtype=np.uint64), n_tok)
    p = np.where(rng.random(n) < 0.5, rng.uniform(0.995, 1.0, n), rng.uniform(0.001, 0.98, n))
    logprob = np.log(p).astype(np.float32)
    logprob[pos == 0] = np.nan
    whole = rng.random(n) < 0.85
    token_ids = rng.integers(0, 50, n).astype(np.int32)
    # Candidates: distinct ids, log-probs sorted best first.
    topk_ids = np.stack([rng.permutation(50)[:K] for _ in range(n)]).astype(np.int32)
    topk_lp = np.sort(np.log(rng.dirichlet(np.ones(K), n)), axis=1)[:, ::-1].astype(np.float32)
    return dict(
        token_ids=token_ids, pos=pos, logprob=logprob, whole=whole, topk_ids=topk_ids, topk_logprobs=topk_lp, doc_keys=keys
    )


def test_unscored_positions_never_eligible_and_a_scored_first_token_is():
    # Position 0 is scored after the document-start token (NaN only without one): the score decides, not pos.
    lp = np.array([np.nan, 0.0, 0.0, 0.0, np.nan], np.float32)
    el = eligible(lp, np.ones(5, bool), np.array([0, 0, 1, 2, 0]), 0.5)
    assert el.tolist() == [False, True, True, True, False]


def test_threshold_on_probability():
    p = np.array([0.5, 0.98, 0.9899, 0.99, 0.995, 1.0])
    el = eligible(np.log(p).astype(np.float64), np.ones(6, bool), np.arange(1, 7), 0.99)
    assert el.tolist() == [False, False, False, True, True, True]


def test_nan_logprob_never_eligible():
    el = eligible(np.array([np.nan, 0.0], np.float32), np.ones(2, bool), np.array([1, 2]), 0.5)
    assert el.tolist() == [False, True]


def test_non_whole_never_eligible():
    d = synthetic()
    d["whole"][:] = False
    dec = apply_edit_rule(**d, settings=EditSettings(threshold=0.01))
    assert not dec.eligible.any() and not dec.changed.any()
    assert (dec.new_ids == d["token_ids"]).all()


def test_threshold_one_gives_nothing_eligible_in_practice():
    d = synthetic()
    # Real probabilities below 1 (the log-prob of a real token is < 0 unless it rounds to exactly 0).
    d["logprob"] = np.minimum(d["logprob"], np.float32(-1e-6))
    dec = apply_edit_rule(**d, settings=EditSettings(threshold=1.0))
    assert not dec.eligible.any()
    assert (dec.new_ids == d["token_ids"]).all()


@pytest.mark.parametrize("threshold", [0.3, 0.9, 0.99, 0.999])
def test_low_probability_tokens_never_change(threshold):
    d = synthetic(seed=1)
    dec = apply_edit_rule(**d, settings=EditSettings(threshold=threshold, beta=5.0))
    low = ~(np.exp(d["logprob"].astype(np.float64)) >= threshold)  # NaN (pos 0) included
    assert (dec.new_ids[low] == d["token_ids"][low]).all()
    assert not dec.eligible[low].any()
    assert not dec.changed[d["pos"] == 0].any()


@pytest.mark.parametrize("threshold", [0.05, 0.5, 0.99])
def test_changed_is_subset_of_eligible(threshold):
    d = synthetic(seed=2)
    dec = apply_edit_rule(**d, settings=EditSettings(threshold=threshold, beta=3.0))
    assert dec.eligible.any()
    assert dec.changed.any()
    assert not (dec.changed & ~dec.eligible).any()
    assert (dec.changed == (dec.new_ids != d["token_ids"])).all()
    # Every new id of an eligible token is one of its top-k candidates.
    idx = np.flatnonzero(dec.eligible)
    assert all(dec.new_ids[i] in d["topk_ids"][i] for i in idx)


def test_apply_edit_rule_does_not_modify_inputs():
    d = synthetic()
    before = {k: v.copy() for k, v in d.items()}
    apply_edit_rule(**d, settings=EditSettings(threshold=0.1))
    for k in d:
        np.testing.assert_array_equal(d[k], before[k])


# ---------------------------------------------------------------- keyed uniform


def _keys_pos(n_docs=20, n_tok=50):
    keys = np.repeat(np.array([doc_key(f"d{i}") for i in range(n_docs)], dtype=np.uint64), n_tok)
    pos = np.tile(np.arange(n_tok), n_docs)
    return keys, pos


def test_keyed_uniform_range_and_determinism():
    keys, pos = _keys_pos()
    u = keyed_uniform(0, keys, pos)
    assert u.dtype == np.float64
    assert ((u >= 0) & (u < 1)).all()
    np.testing.assert_array_equal(u, keyed_uniform(0, keys, pos))
    assert len(np.unique(u)) == len(u)
    # Roughly uniform.
    assert abs(u.mean() - 0.5) < 0.05
    hist = np.histogram(u, bins=10, range=(0, 1))[0] / len(u)
    assert (np.abs(hist - 0.1) < 0.04).all()


def test_keyed_uniform_depends_on_seed_doc_and_position():
    keys, pos = _keys_pos()
    u0 = keyed_uniform(0, keys, pos)
    u1 = keyed_uniform(1, keys, pos)
    assert (u0 != u1).mean() > 0.99
    other_doc = keyed_uniform(0, np.full_like(keys, doc_key("another")), pos)
    assert (u0 != other_doc).mean() > 0.99
    shifted = keyed_uniform(0, keys, pos + 1)
    assert (u0 != shifted).mean() > 0.99
    # The same (seed, doc, position) in different places gives the same number.
    k = np.array([doc_key("x")] * 3, dtype=np.uint64)
    assert len(set(keyed_uniform(5, k, np.array([7, 7, 7])))) == 1


def test_keyed_uniform_large_seed_and_keys():
    k = np.array([2**64 - 1, 0, 2**63], dtype=np.uint64)
    u = keyed_uniform(2**63 - 1, k, np.array([0, 2**31 - 1, 5]))
    assert ((u >= 0) & (u < 1)).all()


def test_keyed_uniform_independent_of_order_and_chunking():
    keys, pos = _keys_pos()
    u = keyed_uniform(42, keys, pos)
    perm = np.random.default_rng(0).permutation(len(keys))
    np.testing.assert_array_equal(keyed_uniform(42, keys[perm], pos[perm]), u[perm])
    parts = np.array_split(np.arange(len(keys)), 7)
    chunked = np.concatenate([keyed_uniform(42, keys[p], pos[p]) for p in parts])
    np.testing.assert_array_equal(chunked, u)
    single = np.array([keyed_uniform(42, keys[i : i + 1], pos[i : i + 1])[0] for i in range(0, len(keys), 37)])
    np.testing.assert_array_equal(single, u[::37])


@given(
    seed=st.integers(min_value=0, max_value=2**62),
    doc_ids=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=8),
    n_pos=st.integers(min_value=1, max_value=40),
)
@settings(max_examples=60, deadline=None)
def test_keyed_uniform_pure_function_property(seed, doc_ids, n_pos):
    keys = np.repeat(np.array([doc_key(d) for d in doc_ids], dtype=np.uint64), n_pos)
    pos = np.tile(np.arange(n_pos), len(doc_ids))
    u = keyed_uniform(seed, keys, pos)
    assert ((u >= 0) & (u < 1)).all()
    rev = keyed_uniform(seed, keys[::-1].copy(), pos[::-1].copy())[::-1]
    np.testing.assert_array_equal(u, rev)


def test_doc_key_is_stable_64_bit():
    assert doc_key("abc") == doc_key("abc")
    assert doc_key("abc") != doc_key("abd")
    assert 0 <= doc_key("\u65e5\U0001f600") < 2**64


# ---------------------------------------------------------------- resample


def _cands(n=500, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.permutation(1000)[:K] for _ in range(n)]).astype(np.int32)
    lp = np.sort(np.log(rng.dirichlet(np.ones(K), n)), axis=1)[:, ::-1].astype(np.float32)
    return ids, lp, rng.random(n)


def test_tiny_beta_picks_the_top_candidate():
    ids, lp, u = _cands()
    out = resample(ids, lp, u, K, beta=1e-6)
    np.testing.assert_array_equal(out, ids[:, 0])


def test_top_k_one_always_picks_candidate_zero():
    ids, lp, u = _cands()
    for beta in (0.1, 1.5, 100.0):
        np.testing.assert_array_equal(resample(ids, lp, u, 1, beta), ids[:, 0])
    edge = np.array([0.0, 0.999999999, 0.5])
    np.testing.assert_array_equal(resample(ids[:3], lp[:3], edge, 1, 1.5), ids[:3, 0])


def test_resample_stays_within_top_k():
    ids, lp, u = _cands()
    for k in (1, 2, 3, K):
        out = resample(ids, lp, u, k, beta=50.0)
        assert all(o in row[:k] for o, row in zip(out, ids))
    # With a large beta the draw is near-uniform over the k candidates: all of them appear.
    out = resample(ids, lp, u, 3, beta=1e6)
    assert {int(np.flatnonzero(row == o)[0]) for o, row in zip(out, ids)} == {0, 1, 2}


def test_resample_follows_the_softmax_distribution():
    n = 20000
    ids = np.tile(np.arange(3, dtype=np.int32), (n, 1))
    lp = np.tile(np.log(np.array([0.6, 0.3, 0.1], dtype=np.float32)), (n, 1))
    u = (np.arange(n) + 0.5) / n  # a stratified grid of U[0, 1)
    out = resample(ids, lp, u, 3, beta=1.0)
    shares = np.bincount(out, minlength=3) / n
    np.testing.assert_allclose(shares, [0.6, 0.3, 0.1], atol=0.005)
    out_b = resample(ids, lp, u, 3, beta=2.0)  # temperature flattens: weights sqrt(p)
    w = np.sqrt([0.6, 0.3, 0.1])
    np.testing.assert_allclose(np.bincount(out_b, minlength=3) / n, w / w.sum(), atol=0.005)


def test_resample_handles_minus_inf_candidates():
    ids = np.array([[5, 6, 7]], dtype=np.int32)
    lp = np.array([[-0.1, -np.inf, -np.inf]], dtype=np.float32)
    for u in (0.0, 0.5, 0.999):
        assert resample(ids, lp, np.array([u]), 3, 1.5)[0] == 5


# ---------------------------------------------------------------- strategies


def test_top_p_draws_only_from_the_nucleus():
    ids, lp, u = _cands(n=2000, seed=3)
    beta = 1.5
    out = resample(ids, lp, u, K, beta, strategy="top_p", top_p=0.6)
    w = np.exp(lp.astype(np.float64) / beta)
    w /= w.sum(axis=1, keepdims=True)
    before = np.cumsum(w, axis=1) - w  # mass of the better candidates (stored best first)
    for i in range(len(out)):
        nucleus = ids[i][before[i] < 0.6]
        assert out[i] in nucleus
    # A wider nucleus reaches candidates a narrow one never does.
    wide = resample(ids, lp, u, K, beta, strategy="top_p", top_p=1.0)
    col = lambda drawn: (ids == drawn[:, None]).argmax(axis=1)  # noqa: E731
    assert col(wide).max() > col(out).max()


def test_top_p_tiny_keeps_only_the_best_candidate():
    ids, lp, u = _cands()
    np.testing.assert_array_equal(resample(ids, lp, u, K, 1.5, strategy="top_p", top_p=1e-9), ids[:, 0])


def test_top_p_ignores_k_and_uses_every_stored_candidate():
    ids, lp, u = _cands(n=3000, seed=4)
    flat = np.zeros_like(lp)  # equal mass: the nucleus at top_p=1 is every stored candidate
    out = resample(ids, flat, u, 1, 1.0, strategy="top_p", top_p=1.0)
    picked_col = (ids == out[:, None]).argmax(axis=1)
    assert set(picked_col.tolist()) == set(range(K))


def test_exclude_original_never_draws_the_original():
    ids, lp, u = _cands(n=1000, seed=5)
    original = ids[:, 0].copy()  # the prior's favourite, as for an eligible token
    for strategy in ("top_k", "top_p"):
        out = resample(ids, lp, u, K, 1.5, strategy=strategy, top_p=0.9, original=original)
        assert (out != original).all()
        assert all(o in row for o, row in zip(out, ids))


def test_exclude_original_keeps_a_token_without_alternatives():
    ids = np.array([[5, 6, 7]], dtype=np.int32)
    lp = np.array([[0.0, -np.inf, np.nan]], dtype=np.float32)
    out = resample(ids, lp, np.array([0.7]), 3, 1.5, original=np.array([5], dtype=np.int32))
    assert out.tolist() == [5]


def test_exclude_original_changes_every_eligible_token():
    d = synthetic(seed=6)
    d["topk_ids"][:, 0] = d["token_ids"]  # the original is the top candidate, as in real scores
    dec = apply_edit_rule(**d, settings=EditSettings(threshold=0.5, exclude_original=True))
    assert dec.eligible.any()
    assert (dec.changed == dec.eligible).all()
    plain = apply_edit_rule(**d, settings=EditSettings(threshold=0.5))
    assert plain.changed.sum() < dec.changed.sum()


def test_strategies_enter_the_version():
    base = EditSettings()
    versions = {
        base.version(),
        EditSettings(strategy="top_p").version(),
        EditSettings(strategy="top_p", top_p=0.95).version(),
        EditSettings(exclude_original=True).version(),
    }
    assert len(versions) == 4
    assert "strategy=top_k" in base.version()
    # top_p only matters to the top_p strategy, so it does not mark top_k output stale.
    assert EditSettings(top_p=0.5).version() == base.version()


def test_bad_strategy_is_a_clear_error():
    from tledit_pipeline.settings import SettingsError

    with pytest.raises(SettingsError, match="strategy must be one of top_k, top_p"):
        EditSettings(strategy="beam")
    with pytest.raises(SettingsError, match="top_p must be in"):
        EditSettings(strategy="top_p", top_p=0.0)


# ---------------------------------------------------------------- deletion and generations


def test_deleted_is_whole_scored_and_below_q_and_never_eligible():
    d = synthetic(seed=8)
    dec = apply_edit_rule(**d, settings=EditSettings(threshold=0.99, drop_below=0.3))
    p = np.exp(d["logprob"].astype(np.float64))  # NaN where unscored
    assert (dec.deleted == (d["whole"] & (p < 0.3))).all() and dec.deleted.any()
    assert not (dec.deleted & (dec.eligible | dec.changed)).any()
    assert (dec.new_ids[dec.deleted] == d["token_ids"][dec.deleted]).all()  # a deleted token is cut, not replaced
    assert not apply_edit_rule(**d, settings=EditSettings(threshold=0.99)).deleted.any()  # off by default


def test_generation_streams_are_apart_and_stream_zero_is_generation_one():
    keys = np.repeat(np.array([doc_key("a"), doc_key("b")], dtype=np.uint64), 50)
    pos = np.tile(np.arange(50), 2)
    base = keyed_uniform(3, keys, pos)
    np.testing.assert_array_equal(keyed_uniform(3, keys, pos, stream=0), base)
    streams = [keyed_uniform(3, keys, pos, stream=s) for s in (1, 2, 3)]
    for u in streams:
        assert ((u >= 0) & (u < 1)).all() and np.abs(u - base).max() > 0.1
    assert np.abs(streams[0] - streams[1]).max() > 0.1
    # A stream is not another seed's stream.
    assert not np.array_equal(keyed_uniform(3, keys, pos, stream=1), keyed_uniform(1, keys, pos))
