"""The purely synthetic baseline: what the prior writes when it continues a human document on its own.

For each sampled document the prior is given the first m tokens (never more than half the document) and
samples the rest of the document's length (capped at max_new_tokens; 0 = no cap). A document longer than
`synthetic_segment` tokens is cut into equal pieces of at most that many tokens and each piece is written
the same way, from the human text's m tokens at its own start. Decoding is one token per step, so a
4,500-token scene written in one piece takes 4,500 steps whose attention reads ever longer caches; in
512-token pieces its ~9 pieces are written side by side in 512 steps, each attending at most 512 tokens.
Every generated token's log-probability under the prior (temperature 1) is recorded, so per-document
perplexity is comparable with the raw corpus's teacher-forced scores. By default the sampling is plain
(temperature 1, no truncation); `synthetic_temperature` and `synthetic_top_p` change it (decoding.draw).

Pieces are sorted by length and sampled in batches over one preallocated KV cache (decoding.py); finished
rows are dropped from the batch once half of it is done. Each draw is an inverse-CDF draw with the uniform
keyed by (seed, doc_id, position in the document), as in the edit rule, so the output does not depend on
batch size, order or sharding (beyond float noise in the logits). A sampled special token (end of text,
chat markers) ends that piece: the model said it is done, and a control token is not text.

On CPU, decoding runs in one thread: a decode step is many small operations, and with more threads than
free cores every one of them waits at an OpenMP barrier. Measured on the shared 2-core development machine:
a step of 32 rows took 0.13-0.20 s with one thread and 0.6-4.8 s with two.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tledit_pipeline.decoding import Decoder, decoder_for, draw
from tledit_pipeline.edit import doc_key, keyed_uniform
from tledit_pipeline.prior import Prior
from tledit_pipeline.progress import Progress, Report
from tledit_pipeline.scorer import one_cpu_thread, tokenize
from tledit_pipeline.settings import SyntheticSettings

# The sample decision uses its own stream: a "position" no generated token can have.
_SAMPLE_POS = np.uint64(0xFFFFFFFFFFFFFFFF)

PIECE = pa.struct(
    [
        ("start", pa.int32()),  # first raw token of the piece
        ("prefix", pa.int32()),  # human tokens the prior was given: raw[start : start + prefix]
        ("target", pa.int32()),  # tokens it was asked for (the rest of the piece)
        ("new", pa.int32()),  # tokens it wrote: they stand for raw[start + prefix : start + prefix + new]
    ]
)

SYNTHETIC_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("doc_id", pa.string()),
        ("text", pa.string()),  # each piece's human prefix followed by the prior's continuation
        ("reference_text", pa.string()),  # the raw text at the same positions (size-matched raw)
        ("raw_tokens", pa.int32()),
        ("prefix_tokens", pa.int32()),  # human tokens, all pieces
        ("target_tokens", pa.int32()),  # tokens the prior was asked for, all pieces
        ("new_tokens", pa.int32()),  # tokens it wrote (fewer when it ended a piece itself)
        ("ended", pa.string()),  # length | end_token (the prior ended a piece) | nothing_to_generate
        ("pieces", pa.list_(PIECE)),
        ("token_ids", pa.list_(pa.int32())),  # the generated tokens, pieces in order
        ("logprobs", pa.list_(pa.float32())),  # log P of each generated token under the prior, temperature 1
    ]
)


@dataclass
class SyntheticStats:
    documents: int = 0  # raw documents in the shard
    sampled: int = 0  # documents in the baseline's sample
    pieces: int = 0
    new_tokens: int = 0
    end_token: int = 0  # documents the prior ended (a piece of) itself
    batches: int = 0
    steps: int = 0  # decode steps, all batches
    seconds: float = 0.0


def in_sample(doc_ids: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Deterministic document sample keyed by (seed, doc_id): the same documents whatever the sharding."""
    if fraction >= 1.0:
        return np.ones(len(doc_ids), dtype=bool)
    keys = np.array([doc_key(d) for d in doc_ids], dtype=np.uint64)
    return keyed_uniform(seed, keys, np.full(len(keys), _SAMPLE_POS)) < fraction


def plan_pieces(n_raw: int, settings: SyntheticSettings, context: int) -> list[tuple[int, int, int]]:
    """(start, prefix, target) per piece of one document.

    The first piece starts from m tokens but at most half the document, so the prior writes at least half;
    the cap (max_new_tokens) shortens the document first; what is left is cut into equal pieces of at most
    `synthetic_segment` tokens (and never more than the prior's context), each later one from
    min(m, half the piece) human tokens.
    """
    if n_raw == 0:
        return []
    first = max(1, min(settings.prefix_tokens, n_raw // 2))
    total = n_raw if not settings.max_new_tokens else min(n_raw, first + settings.max_new_tokens)
    limit = min(settings.synthetic_segment or context, context)
    if total <= limit:
        return [(0, first, total - first)]
    n = -(-total // limit)
    bounds = [i * total // n for i in range(n + 1)]
    pieces = []
    for i in range(n):
        start, size = bounds[i], bounds[i + 1] - bounds[i]
        prefix = first if i == 0 else max(1, min(settings.prefix_tokens, size // 2))
        pieces.append((start, prefix, size - prefix))
    return pieces


class Sampler:
    """Samples batches of pieces from the prior: one KV cache per batch, keyed draws, early stops."""

    def __init__(self, prior: Prior, settings: SyntheticSettings, decoder: Decoder):
        import torch

        self.prior, self.settings, self.torch, self.decoder = prior, settings, torch, decoder
        self.text_ok = np.array([b is not None for b in prior.token_bytes], dtype=bool)
        pad = getattr(prior.tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0
        self.steps = 0

    def sample(
        self, prefixes: list[np.ndarray], targets: list[int], keys: np.ndarray, first_pos: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray, bool]]:
        """Per piece: generated ids, their log-probs, and whether a special token ended it early.

        first_pos: each piece's first generated token's position in its document (the draws' key).
        """
        torch, s, dev = self.torch, self.settings, self.prior.device
        b, width = len(prefixes), max(len(p) for p in prefixes)
        inp = np.full((b, width), self.pad_id, dtype=np.int64)
        valid = np.zeros((b, width), dtype=bool)
        for r, p in enumerate(prefixes):  # left padding: every row's next token is at the same column
            inp[r, width - len(p) :] = p
            valid[r, width - len(p) :] = True
        plen = np.array([len(p) for p in prefixes], dtype=np.int64)
        target = np.array(targets, dtype=np.int64)
        longest = int(target.max())
        ids = np.zeros((b, longest), dtype=np.int32)
        lps = np.zeros((b, longest), dtype=np.float32)
        count = np.zeros(b, dtype=np.int64)
        ended = np.zeros(b, dtype=bool)
        alive = target > 0
        rows = np.arange(b)  # batch rows still in the decoder, in its order
        with torch.inference_mode():
            self.decoder.start(b, width + longest)
            valid_t = torch.from_numpy(valid).to(dev)
            pos_t = (valid_t.long().cumsum(-1) - 1).clamp(min=0)
            logits = self.decoder.step(torch.from_numpy(inp).to(dev), pos_t, valid_t)
            for t in range(longest):
                u = torch.from_numpy(keyed_uniform(s.synthetic_seed, keys[rows], first_pos[rows] + t)).to(dev)
                tok_t, lp_t = draw(logits, u, s.synthetic_temperature, s.synthetic_top_p)
                tok, lp = tok_t.cpu().numpy(), lp_t.cpu().numpy()
                is_text = self.text_ok[tok]
                live = alive[rows]
                write = rows[live & is_text]
                ids[write, count[write]] = tok[live & is_text]
                lps[write, count[write]] = lp[live & is_text]
                count[write] += 1
                ended[rows[live & ~is_text]] = True
                alive[rows] = live & is_text & (count[rows] < target[rows])
                self.steps += 1
                if not alive.any():
                    break
                still = alive[rows]
                if still.sum() <= len(rows) // 2:  # half the batch is done: carry on with the rest only
                    keep = torch.from_numpy(np.flatnonzero(still)).to(dev)
                    self.decoder.keep(keep)
                    rows, tok_t = rows[still], tok_t[keep]
                pos = torch.from_numpy(plen[rows] + t)[:, None].to(dev)
                logits = self.decoder.step(tok_t[:, None], pos, torch.ones((len(rows), 1), dtype=torch.bool, device=dev))
        return [(ids[r, : count[r]].copy(), lps[r, : count[r]].copy(), bool(ended[r])) for r in range(b)]


def decode_workers(device: str) -> int:
    """Worker threads that decode batches side by side: one per core the process may use on CPU, else one."""
    if device != "cpu":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _text(prior: Prior, ids: Sequence[int]) -> str:
    # Byte-level tokens: a continuation can stop inside a character; U+FFFD marks such bytes.
    return b"".join(prior.token_bytes[i] or b"" for i in ids).decode("utf-8", errors="replace")


def synthesize(
    prior: Prior,
    shard: str,
    docs: pa.Table,
    settings: SyntheticSettings,
    report: Report | None = None,
    decoder: Decoder | None = None,
    workers: int | None = None,
    start_token: int | None = None,
) -> tuple[pa.Table, SyntheticStats]:
    """The baseline for one raw_corpus table (doc_id, text): one row per sampled document, in raw order.

    start_token: the prior's document-start token (prior.document_start_id), read before each document's
    first piece as token_scores reads it before the document, or None. Later pieces start mid-document, as
    the packed sequences of pre-training often do, and get none. decoder: how the prior is run (default:
    decoding.decoder_for); workers: decoding threads (default: one per core on CPU).
    """
    doc_ids = docs.column("doc_id").to_pylist()
    texts = docs.column("text").to_pylist()
    stats = SyntheticStats(documents=len(doc_ids))
    chosen = np.flatnonzero(in_sample(doc_ids, settings.synthetic_sample, settings.synthetic_seed))
    stats.sampled = len(chosen)
    ids = tokenize(prior, [texts[i] for i in chosen])
    keys = np.array([doc_key(doc_ids[i]) for i in chosen], dtype=np.uint64)
    plans = [plan_pieces(len(t), settings, prior.context_length) for t in ids]
    results: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, bool]] = {}
    # Similar lengths together, so finished rows idle little; the order does not change any draw.
    todo = sorted(((j, *piece) for j, plan in enumerate(plans) for piece in plan if piece[2] > 0), key=lambda u: (u[3], u[2]))
    workers = workers or decode_workers(prior.device)
    # At most synthetic_batch pieces per batch, and at least one batch per worker.
    n_batches = max(-(-len(todo) // settings.synthetic_batch), min(workers, len(todo)))
    size = -(-len(todo) // n_batches) if todo else 1
    batches = [todo[s : s + size] for s in range(0, len(todo), size)]
    left = np.bincount([u[0] for u in todo], minlength=len(plans))  # pieces still to write, per document
    progress = Progress("sampling", len(chosen), sum(u[3] for u in todo), report)
    progress.advance(int((left == 0).sum()), 0)
    samplers: list[Sampler] = []
    head = np.array([] if start_token is None else [start_token], dtype=np.int64)

    def prefix_of(j: int, start: int, prefix: int) -> np.ndarray:
        return np.concatenate([head if start == 0 else head[:0], ids[j][start : start + prefix]])

    local = threading.local()
    base = decoder or decoder_for(prior.model, settings.synthetic_batch)

    def run(batch: list[tuple[int, int, int, int]]) -> list[tuple[np.ndarray, np.ndarray, bool]]:
        if not hasattr(local, "sampler"):  # one sampler (decoder and KV cache) per worker thread
            local.sampler = Sampler(prior, settings, base.fork())
            samplers.append(local.sampler)
        return local.sampler.sample(
            [prefix_of(j, start, prefix) for j, start, prefix, _ in batch],
            [target for *_, target in batch],
            keys[[j for j, *_ in batch]],
            np.array([start + prefix for _, start, prefix, _ in batch], dtype=np.int64),
        )

    t0 = time.perf_counter()
    with one_cpu_thread(prior.device), ThreadPoolExecutor(workers) as pool:
        for batch, out in zip(batches, pool.map(run, batches)):
            finished = 0
            for (j, start, *_), res in zip(batch, out):
                results[(j, start)] = res
                left[j] -= 1
                finished += int(left[j] == 0)
            stats.batches += 1
            progress.advance(finished, sum(len(r[0]) for r in out))
    stats.seconds = time.perf_counter() - t0
    stats.steps = sum(x.steps for x in samplers)
    stats.pieces = sum(len(p) for p in plans)
    empty = (np.zeros(0, np.int32), np.zeros(0, np.float32), False)
    rows: dict[str, list] = {f.name: [] for f in SYNTHETIC_SCHEMA}
    for j, i in enumerate(chosen):
        pieces = [(start, prefix, target, *results.get((j, start), empty)) for start, prefix, target in plans[j]]
        text_ids: list[int] = []
        ref_ids: list[int] = []
        for start, prefix, _, gen, _, _ in pieces:
            text_ids += ids[j][start : start + prefix].tolist() + gen.tolist()
            ref_ids += ids[j][start : start + prefix + len(gen)].tolist()
        new = sum(len(p[3]) for p in pieces)
        end_token = any(p[5] for p in pieces)
        rows["shard"].append(shard)
        rows["doc_id"].append(doc_ids[i])
        rows["text"].append(_text(prior, text_ids))
        rows["reference_text"].append(_text(prior, ref_ids))
        rows["raw_tokens"].append(len(ids[j]))
        rows["prefix_tokens"].append(sum(p[1] for p in pieces))
        rows["target_tokens"].append(sum(p[2] for p in pieces))
        rows["new_tokens"].append(new)
        rows["ended"].append("end_token" if end_token else "length" if new else "nothing_to_generate")
        rows["pieces"].append([{"start": p[0], "prefix": p[1], "target": p[2], "new": len(p[3])} for p in pieces])
        rows["token_ids"].append(np.concatenate([p[3] for p in pieces] or [np.zeros(0, np.int32)]).astype(np.int32))
        rows["logprobs"].append(np.concatenate([p[4] for p in pieces] or [np.zeros(0, np.float32)]).astype(np.float32))
        stats.new_tokens += new
        stats.end_token += end_token
    if chosen.size:
        progress.done()
    return pa.Table.from_pydict(rows, schema=SYNTHETIC_SCHEMA), stats
