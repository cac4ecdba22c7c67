"""The edit rule of Token-Level Editing, in one place.

For token x_i with prior probability P(x_i | x_<i) from one teacher-forced pass over the ORIGINAL text:
    eligible  = i > 0 and the token is whole text and P >= p          (threshold p, default 0.99)
    edited    = a draw from softmax(top-k logprob / beta) over the prior's top-k candidates at i
    changed   = eligible and the draw differs from x_i
Everything else is kept. The draw's randomness is keyed by (seed, doc_id, position), so the result does
not depend on batch size, order, threads or how documents are split into shards.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from tledit_pipeline.settings import EditSettings

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def doc_key(doc_id: str) -> int:
    """A 64-bit key per document id for the keyed random stream."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def keyed_uniform(seed: int, doc_keys: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """U[0, 1) per token, a pure function of (seed, doc key, position)."""
    with np.errstate(over="ignore"):
        x = _splitmix64(doc_keys.astype(np.uint64) ^ _splitmix64(np.full(1, seed, dtype=np.uint64)))
        x = _splitmix64(x ^ pos.astype(np.uint64))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def eligible(logprob: np.ndarray, whole: np.ndarray, pos: np.ndarray, threshold: float) -> np.ndarray:
    """Tokens the prior is over-confident about (P >= p) that may be replaced in place."""
    lp = np.nan_to_num(logprob.astype(np.float64), nan=-np.inf)
    return (pos > 0) & whole & (lp >= np.log(threshold))


def resample(topk_ids: np.ndarray, topk_logprobs: np.ndarray, u: np.ndarray, top_k: int, beta: float) -> np.ndarray:
    """Inverse-CDF draw from softmax(logprob / beta) over the first top_k candidates of each row."""
    lp = np.nan_to_num(topk_logprobs[:, :top_k].astype(np.float64), nan=-np.inf) / beta
    w = np.exp(lp - lp.max(axis=1, keepdims=True))
    cdf = np.cumsum(w, axis=1)
    pick = (cdf < (u * cdf[:, -1])[:, None]).sum(axis=1)
    return topk_ids[np.arange(len(pick)), np.minimum(pick, top_k - 1)]


@dataclass
class EditDecision:
    new_ids: np.ndarray  # token id after editing (equal to the original where kept)
    eligible: np.ndarray  # bool
    changed: np.ndarray  # bool


def apply_edit_rule(
    token_ids: np.ndarray,
    pos: np.ndarray,
    logprob: np.ndarray,
    whole: np.ndarray,
    topk_ids: np.ndarray,
    topk_logprobs: np.ndarray,
    doc_keys: np.ndarray,
    settings: EditSettings,
) -> EditDecision:
    """The rule over aligned per-token arrays (any number of documents, any order)."""
    elig = eligible(logprob, whole, pos, settings.threshold)
    new_ids = token_ids.copy()
    idx = np.flatnonzero(elig)
    if len(idx):
        u = keyed_uniform(settings.seed, doc_keys[idx], pos[idx])
        new_ids[idx] = resample(topk_ids[idx], topk_logprobs[idx], u, settings.top_k, settings.beta)
    return EditDecision(new_ids=new_ids, eligible=elig, changed=new_ids != token_ids)
