"""The edit rule of Token-Level Editing, in one place.

For token x_i with prior probability P(x_i | x_<i) from one teacher-forced pass over the ORIGINAL text:
    eligible  = x_i is scored and whole text and P >= p               (threshold p, default 0.99)
    edited    = a draw from softmax(logprob / beta) over the prior's candidates at i, by strategy:
                  top_k  the first k stored candidates (the paper's setting, the default)
                  top_p  the nucleus: the fewest stored candidates, best first, whose tempered mass
                         reaches top_p (0.9 in the reference code)
                with exclude_original, x_i itself is taken out of the candidates first (a token with no
                other candidate is kept), so every eligible token changes
    changed   = eligible and the draw differs from x_i
    deleted   = x_i is scored and whole text and P < q, with drop_below q > 0 (off by default): its
                span is cut. The paper's best continual-pretraining setting deletes P <= 0.001; the
                reference code's variant drops P < 0.001 and resamples P > 0.99 (q < p, so no token is both)
Everything else is kept. The draw's randomness is keyed by (seed, doc_id, position), so the result does
not depend on batch size, order, threads or how documents are split into shards. Generation g >= 2 (the
edit applied again to edited text) draws from its own stream: the same positions of the same document get
fresh randomness instead of repeating generation 1's draws.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from tledit_pipeline.settings import EditSettings

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_STREAM_SALT = np.uint64(0x6E6572617469_6F6E)  # "eration": keeps stream n apart from seed n


def doc_key(doc_id: str) -> int:
    """A 64-bit key per document id for the keyed random stream."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def keyed_uniform(seed: int, doc_keys: np.ndarray, pos: np.ndarray, stream: int = 0) -> np.ndarray:
    """U[0, 1) per token, a pure function of (seed, doc key, position, stream); stream 0 is generation 1's."""
    with np.errstate(over="ignore"):
        x = _splitmix64(doc_keys.astype(np.uint64) ^ _splitmix64(np.full(1, seed, dtype=np.uint64)))
        if stream:
            x = _splitmix64(x ^ _splitmix64(np.full(1, stream, dtype=np.uint64) ^ _STREAM_SALT))
        x = _splitmix64(x ^ pos.astype(np.uint64))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def eligible(logprob: np.ndarray, whole: np.ndarray, pos: np.ndarray, threshold: float) -> np.ndarray:
    """Tokens the prior is over-confident about (P >= p) that may be replaced in place.

    An unscored token (NaN: position 0 when the prior read no document-start token) is never eligible;
    `pos` is kept for callers, the NaN decides.
    """
    lp = np.nan_to_num(logprob.astype(np.float64), nan=-np.inf)
    return whole & (lp >= np.log(threshold))


def low_probability(logprob: np.ndarray, whole: np.ndarray, drop_below: float) -> np.ndarray:
    """Whole tokens the prior finds very unlikely (P < q): deleted when drop_below q > 0."""
    if drop_below <= 0:
        return np.zeros(len(logprob), dtype=bool)
    lp = logprob.astype(np.float64)
    return whole & ~np.isnan(lp) & (lp < np.log(drop_below))


def resample(
    topk_ids: np.ndarray,
    topk_logprobs: np.ndarray,
    u: np.ndarray,
    top_k: int,
    beta: float,
    strategy: str = "top_k",
    top_p: float = 0.9,
    original: np.ndarray | None = None,
) -> np.ndarray:
    """Inverse-CDF draw from softmax(logprob / beta) over each row's candidates (see the module docstring)."""
    width = top_k if strategy == "top_k" else topk_ids.shape[1]
    ids = topk_ids[:, :width]
    lp = np.nan_to_num(topk_logprobs[:, :width].astype(np.float64), nan=-np.inf, neginf=-np.inf) / beta
    if original is not None:
        lp = np.where(ids == original[:, None], -np.inf, lp)
    best = lp.max(axis=1, keepdims=True)
    none_left = ~np.isfinite(best[:, 0])  # no candidate but the original: keep it
    w = np.exp(lp - np.where(none_left[:, None], 0.0, best))
    if strategy == "top_p":
        order = np.argsort(-w, axis=1, kind="stable")
        ws = np.take_along_axis(w, order, axis=1)
        mass = ws / np.maximum(ws.sum(axis=1, keepdims=True), 1e-300)
        # Keep a candidate while the mass before it is below top_p: the best one is always kept.
        keep = (np.cumsum(mass, axis=1) - mass) < top_p
        np.put_along_axis(w, order, np.where(keep, ws, 0.0), axis=1)
    cdf = np.cumsum(w, axis=1)
    pick = (cdf < (u * cdf[:, -1])[:, None]).sum(axis=1)
    drawn = ids[np.arange(len(pick)), np.minimum(pick, width - 1)]
    if original is not None:
        drawn = np.where(none_left, original, drawn)
    return drawn


@dataclass
class EditDecision:
    new_ids: np.ndarray  # token id after editing (equal to the original where kept or deleted)
    eligible: np.ndarray  # bool
    changed: np.ndarray  # bool: resampled to another token
    deleted: np.ndarray  # bool: cut from the text (P < drop_below)


def apply_edit_rule(
    token_ids: np.ndarray,
    pos: np.ndarray,
    logprob: np.ndarray,
    whole: np.ndarray,
    topk_ids: np.ndarray,
    topk_logprobs: np.ndarray,
    doc_keys: np.ndarray,
    settings: EditSettings,
    generation: int = 1,
) -> EditDecision:
    """The rule over aligned per-token arrays (any number of documents, any order), for generation g."""
    elig = eligible(logprob, whole, pos, settings.threshold)
    new_ids = token_ids.copy()
    idx = np.flatnonzero(elig)
    if len(idx):
        u = keyed_uniform(settings.seed, doc_keys[idx], pos[idx], stream=generation - 1)
        new_ids[idx] = resample(
            topk_ids[idx],
            topk_logprobs[idx],
            u,
            settings.top_k,
            settings.beta,
            strategy=settings.strategy,
            top_p=settings.top_p,
            original=token_ids[idx] if settings.exclude_original else None,
        )
    return EditDecision(
        new_ids=new_ids,
        eligible=elig,
        changed=new_ids != token_ids,
        deleted=low_probability(logprob, whole, settings.drop_below),
    )
