"""Decoding: the KV-cached decoders against one teacher-forced pass, and the draw's distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tledit_pipeline import decoding
from tledit_pipeline.decoding import CachedDecoder, ModelDecoder, decoder_for, draw, llama_like


def _teacher_forced(model, seqs: list[list[int]]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [torch.log_softmax(model(input_ids=torch.tensor([s])).logits[0].float(), -1) for s in seqs]


@pytest.mark.parametrize("kind", ["cached", "model"])
def test_decoders_match_one_teacher_forced_pass(tiny_prior, kind):
    """Left-padded prefixes of different lengths, steps with per-row positions, then dropping a row."""
    model = tiny_prior.model
    dec = CachedDecoder(model) if kind == "cached" else ModelDecoder(model)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 300, size=n).tolist() for n in (12, 5, 9)]
    prefix = [4, 2, 5]
    ref = _teacher_forced(model, seqs)
    width = max(prefix)
    ids = torch.zeros((3, width), dtype=torch.long)
    valid = torch.zeros((3, width), dtype=torch.bool)
    for r, (s, p) in enumerate(zip(seqs, prefix)):
        ids[r, width - p :] = torch.tensor(s[:p])
        valid[r, width - p :] = True
    rows = [0, 1, 2]
    with torch.inference_mode():
        dec.start(3, width + 8)
        logits = dec.step(ids, (valid.long().cumsum(-1) - 1).clamp(min=0), valid)
        for t in range(4):
            lp = torch.log_softmax(logits, -1)
            for i, r in enumerate(rows):
                np.testing.assert_allclose(lp[i].numpy(), ref[r][prefix[r] - 1 + t].numpy(), atol=2e-4)
            if t == 1:  # row 1 finishes: the decoder carries on with rows 0 and 2
                dec.keep(torch.tensor([0, 2]))
                rows = [0, 2]
            nxt = torch.tensor([[seqs[r][prefix[r] + t]] for r in rows])
            pos = torch.tensor([[prefix[r] + t] for r in rows])
            logits = dec.step(nxt, pos, torch.ones((len(rows), 1), dtype=torch.bool))
    assert dec.rows == 2


def test_llama_priors_take_the_cached_decoder(tiny_prior):
    assert llama_like(tiny_prior.model)
    assert isinstance(decoder_for(tiny_prior.model), CachedDecoder)
    assert isinstance(decoder_for(tiny_prior.model, generic=True), ModelDecoder)


def test_bf16_cached_decoder_follows_the_model(tiny_model_dir, tmp_path):
    """In bf16 (prepacked weights where the CPU has bf16 instructions) the steps agree with the model's forward."""
    from tledit_pipeline.prior import load_prior

    prior = load_prior(str(tiny_model_dir), tmp_path, device="cpu", dtype="bfloat16")
    seq = np.random.default_rng(1).integers(1, 300, size=16).tolist()
    ref = _teacher_forced(prior.model, [seq])[0]
    dec = CachedDecoder(prior.model)
    with torch.inference_mode():
        dec.start(1, 16)
        logits = dec.step(torch.tensor([seq[:8]]), torch.arange(8)[None], torch.ones((1, 8), dtype=torch.bool))
        for t in range(8, 16):
            lp = torch.log_softmax(logits, -1)[0]
            assert int(lp.argmax()) == int(ref[t - 1].argmax())
            assert float((lp.exp() - ref[t - 1].exp()).abs().max()) < 0.05
            logits = dec.step(torch.tensor([[seq[t]]]), torch.tensor([[t]]), torch.ones((1, 1), dtype=torch.bool))


def _nucleus(p: np.ndarray, top_p: float) -> set[int]:
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))
    kept, mass = set(), 0.0
    for i in order:
        if mass >= top_p:
            break
        kept.add(i)
        mass += p[i]
    return kept


def test_plain_draw_is_the_inverse_cdf_of_the_prior():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0], [3.0, 0.0, 0.0, 0.0]])
    p = torch.softmax(logits, -1).double()
    u = torch.tensor([0.5, 0.99], dtype=torch.float64)
    tok, lp = draw(logits, u)
    expected = [int((p[r].cumsum(0) < u[r]).sum()) for r in range(2)]
    assert tok.tolist() == expected
    np.testing.assert_allclose(lp.numpy(), torch.log_softmax(logits, -1)[[0, 1], expected].numpy(), rtol=1e-6)


@pytest.mark.parametrize("first", [decoding.TOP_P_FIRST, 3])
def test_top_p_draws_only_from_the_nucleus(monkeypatch, first):
    """Whatever the uniform, the token is in the nucleus (also when it is wider than the first top-k looked at)."""
    monkeypatch.setattr(decoding, "TOP_P_FIRST", first)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 50, generator=gen) * torch.linspace(0.1, 4, 64)[:, None]  # flat to peaked rows
    for temperature, top_p in ((1.0, 0.9), (0.7, 0.5), (1.3, 0.95)):
        p = torch.softmax(logits / temperature, -1).double().numpy()
        for uu in (0.0, 0.3, 0.999999):
            u = torch.full((64,), uu, dtype=torch.float64)
            tok, lp = draw(logits, u, temperature, top_p)
            for r in range(64):
                assert int(tok[r]) in _nucleus(p[r], top_p)
            # The recorded log-prob is the prior's own, at temperature 1.
            np.testing.assert_allclose(lp.numpy(), torch.log_softmax(logits, -1).gather(1, tok[:, None])[:, 0].numpy(), rtol=1e-5)


def test_top_p_frequencies_follow_the_renormalised_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    u = torch.linspace(0, 1, 2001, dtype=torch.float64)[:-1]
    tok, _ = draw(logits.expand(len(u), 4).contiguous(), u, 1.0, 0.75)
    freq = np.bincount(tok.numpy(), minlength=4) / len(u)
    np.testing.assert_allclose(freq, [0.625, 0.375, 0, 0], atol=1e-3)  # {0, 1} reach 0.75; renormalised


def test_temperature_sharpens():
    logits = torch.log(torch.tensor([[0.6, 0.4]]))
    u = torch.linspace(0, 1, 1001, dtype=torch.float64)[:-1]
    cold, _ = draw(logits.expand(len(u), 2).contiguous(), u, 0.5, 1.0)
    share = float((cold == 0).double().mean())
    assert abs(share - 0.36 / 0.52) < 2e-3  # 0.6^2 / (0.6^2 + 0.4^2)
