"""The teacher-forced pass: batches of windows through the prior, log-probs and top-k candidates out.

Scorer is the hot path of token_scores (tledit_pipeline.scoring streams shards through it). Logits are
computed only for the positions that are scored (not for padding, the start token, a context or re-read
context), in float32 and one reused buffer, which keeps the vocabulary projection off the hot path.
Candidates exclude special tokens and tokens that are not valid text on their own, so the edit step can
use any of them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from tledit_pipeline import packing
from tledit_pipeline.health import probability_histogram
from tledit_pipeline.prior import Prior, document_start_id
from tledit_pipeline.progress import Progress
from tledit_pipeline.settings import ScoringSettings
from tledit_pipeline.spans import token_spans
from tledit_pipeline.windows import Batch, Window, pack_batches, plan_windows

LOGIT_ROWS = 1024  # positions projected to the vocabulary at once: bounds the logits' memory
WIDE = 8  # extra top entries taken so that blocked tokens rarely leave fewer than k candidates


@dataclass
class DocScores:
    """Per-token arrays of one document; an unscored row (position 0 without a start token) has NaN logprob."""

    doc_id: str
    token_ids: np.ndarray
    char_start: np.ndarray
    char_end: np.ndarray
    whole: np.ndarray
    logprob: np.ndarray  # float32
    topk_ids: np.ndarray  # int32 [n, k]
    topk_logprobs: np.ndarray  # float32 [n, k]


@dataclass
class ScoreStats:
    documents: int = 0
    tokens: int = 0
    windows: int = 0
    batches: int = 0
    fed_tokens: int = 0  # window tokens given to the model (re-read context included)
    padded_tokens: int = 0  # fed tokens plus padding
    inexact_documents: int = 0
    seconds: float = 0.0
    threads: int = 0
    scored: int = 0  # tokens with a log-prob (all, or all but each document's first without a start token)
    shares: dict[str, float] = field(default_factory=dict)  # probability histogram, weighted by `scored`
    logprob_sum: float = 0.0  # over scored tokens: the token-level perplexity

    def count_probabilities(self, logprob: np.ndarray) -> None:
        n = int((~np.isnan(logprob)).sum())
        if not n:
            return
        self.logprob_sum += float(np.nansum(logprob.astype(np.float64)))
        total = self.scored + n
        for name, share in probability_histogram(logprob).items():
            self.shares[name] = (self.shares.get(name, 0.0) * self.scored + share * n) / total
        self.scored = total

    @property
    def perplexity(self) -> float:
        """exp of the mean negative log-prob over every scored token (NaN when nothing was scored)."""
        return float(np.exp(-self.logprob_sum / self.scored)) if self.scored else float("nan")

    @property
    def padding_share(self) -> float:
        return 1 - self.fed_tokens / self.padded_tokens if self.padded_tokens else 0.0


def tokenize(prior: Prior, texts: Sequence[str]) -> list[np.ndarray]:
    if not len(texts):
        return []
    # split_special_tokens: a literal "<|endoftext|>" in a human document is text, not a control token.
    enc = prior.tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True, return_attention_mask=False)[
        "input_ids"
    ]
    return [np.asarray(ids, dtype=np.int64) for ids in enc]


def use_all_cores() -> int:
    """Intra-op threads on every core this process may run on (torch's default can be lower in containers)."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    if torch.get_num_threads() < cores and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cores)
    return torch.get_num_threads()


@contextmanager
def one_cpu_thread(device: str) -> Iterator[None]:
    """One intra-op torch thread on CPU for a block whose parallelism is elsewhere (worker threads, one small
    model per step); the process's setting is restored after."""
    import torch

    before = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Scorer:
    """Runs batches of windows through the prior; holds the small device-side tables it needs."""

    def __init__(self, prior: Prior, settings: ScoringSettings):
        import torch

        self.prior, self.settings = prior, settings
        self.torch = torch
        self.threads = use_all_cores()
        self.k = settings.candidates
        self.window = min(settings.window, prior.context_length)
        # A prior with a shorter context than asked for keeps the same context-to-window ratio.
        capped = self.window < settings.window
        self.overlap = min(settings.overlap, self.window // 4) if capped else settings.overlap
        dev = prior.device
        self.blocked = torch.from_numpy(~prior.replaceable).to(dev)  # never a candidate
        self.byte_len = np.array([len(b) if b else 0 for b in prior.token_bytes], dtype=np.int64)
        pad = getattr(prior.tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0
        self.body = prior.model.get_decoder() if hasattr(prior.model, "get_decoder") else prior.model.base_model
        self.head = prior.model.get_output_embeddings()
        # Logits in float32 even for a bf16 body, so the P >= p boundary is not blurred by rounding.
        self.head_weight = self.head.weight if self.head.weight.dtype == torch.float32 else self.head.weight.float()
        self.head_bias = None if getattr(self.head, "bias", None) is None else self.head.bias.float()
        self._logits = None  # the reused logits buffer (see logits())
        self.start_id = document_start_id(prior.tokenizer) if settings.document_start else None
        # Several windows per row where the model's attention can keep to each (SDPA models); else one per row.
        self.pack = packing.enable(prior.model)

    def sequences(self, ids: list[np.ndarray], contexts: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], list[int]]:
        """What the model reads for each document, [start] + context + document, and where the document begins."""
        head = np.array([] if self.start_id is None else [self.start_id], dtype=np.int64)
        seqs, offsets = [], []
        for i, tok in enumerate(ids):
            pre = head if contexts is None else np.concatenate([head, np.asarray(contexts[i], dtype=np.int64)])
            seqs.append(np.concatenate([pre, tok]) if len(pre) else tok)
            offsets.append(len(pre))
        return seqs, offsets

    def plan(self, seqs: list[np.ndarray], offsets: Sequence[int] | None = None) -> tuple[list[Window], list[Batch]]:
        """Every window of these model sequences (scored from each document's start), and the batches they run in."""
        windows = [
            w
            for i, seq in enumerate(seqs)
            for w in plan_windows(i, len(seq), self.window, self.overlap, first=offsets[i] if offsets else 1)
        ]
        return windows, pack_batches(windows, self.settings.batch_tokens, self.window, self.pack)

    def hidden(self, batch: Batch, ids: list[np.ndarray]):
        """Last hidden states at the scored positions of one batch, their target tokens, and its padded size.

        Rows are right-padded. A row of one window runs without an attention mask: causal attention already
        keeps every real token from seeing the padding after it, and the mask-free call takes the fused
        causal kernel. A batch with packed rows gets position ids that restart at each window and attention
        kept within each window (tledit_pipeline.packing): every window is computed as if it were alone.
        """
        torch = self.torch
        dev = self.prior.device
        inp = np.full((len(batch.rows), batch.width), self.pad_id, dtype=np.int64)
        pos = np.zeros_like(inp) if batch.packed else None
        rows, cols, spans = [], [], []
        for r, row in enumerate(batch.rows):
            at = 0
            for w in row:
                inp[r, at : at + w.length] = ids[w.doc][w.start : w.end]
                if pos is not None:
                    pos[r, at : at + w.length] = np.arange(w.length)
                # Hidden state at column c predicts the token at column c + 1.
                c = np.arange(w.score_from - w.start - 1, w.length - 1) + at
                rows.append(np.full(len(c), r))
                cols.append(c)
                spans.append((r, at, at + w.length))
                at += w.length
        row_t = torch.from_numpy(np.concatenate(rows)).to(dev)
        col_t = torch.from_numpy(np.concatenate(cols)).to(dev)
        inp_t = torch.from_numpy(inp).to(dev)
        if pos is None:
            hidden = self.body(input_ids=inp_t, use_cache=False).last_hidden_state
        else:
            with packing.segments(spans):
                hidden = self.body(input_ids=inp_t, position_ids=torch.from_numpy(pos).to(dev), use_cache=False).last_hidden_state
        return hidden[row_t, col_t], inp_t[row_t, col_t + 1], batch.padded_tokens

    def logits(self, picked, s: int):
        """Vocabulary logits of up to LOGIT_ROWS positions, in float32, written into one reused buffer.

        A fresh 200 MB tensor per slice costs about as much in page faults as a pass of exp over it.
        """
        torch = self.torch
        x = picked[s : s + LOGIT_ROWS].float()
        if self._logits is None:
            self._logits = torch.empty((LOGIT_ROWS, self.head_weight.shape[0]), dtype=torch.float32, device=x.device)
        assert self._logits is not None
        out = self._logits[: x.shape[0]]
        torch.matmul(x, self.head_weight.t(), out=out)
        if self.head_bias is not None:
            out.add_(self.head_bias)
        return out

    def candidates(self, logits):
        """Top-k replaceable candidates of each row, and each row's largest logit.

        One topk over the raw logits, WIDE entries wider than k, so blocked tokens (specials, byte pieces)
        rarely crowd out k replaceable ones; the few rows where they do are redone with them masked.
        """
        torch = self.torch
        k = self.k
        wide_v, wide_i = torch.topk(logits, min(k + WIDE, logits.shape[1]), dim=-1)
        ok = ~self.blocked[wide_i]
        take = ok & (ok.cumsum(1) <= k)
        short = take.sum(1) < k
        top_v = torch.empty((logits.shape[0], k), dtype=wide_v.dtype, device=wide_v.device)
        top_i = torch.empty((logits.shape[0], k), dtype=wide_i.dtype, device=wide_i.device)
        full = ~short
        top_v[full] = wide_v[full][take[full]].view(-1, k)
        top_i[full] = wide_i[full][take[full]].view(-1, k)
        if short.any():
            top_v[short], top_i[short] = torch.topk(logits[short].masked_fill_(self.blocked, float("-inf")), k, dim=-1)
        return top_v, top_i, wide_v[:, 0]

    def forward_batch(self, batch: Batch, ids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Log-prob of the actual token and top-k candidates at every scored position, from one pass."""
        torch = self.torch
        with torch.inference_mode():
            picked, target, padded = self.hidden(batch, ids)
            lp_out, ids_out, tlp_out = [], [], []
            for s in range(0, picked.shape[0], LOGIT_ROWS):
                logits = self.logits(picked, s)
                actual = logits.gather(1, target[s : s + LOGIT_ROWS, None])[:, 0]
                top_v, top_i, row_max = self.candidates(logits)
                # The normalizer last, in place: the buffer is rewritten by the next slice anyway.
                lse = logits.sub_(row_max[:, None]).exp_().sum(dim=-1).log_().add_(row_max)
                lp_out.append(actual - lse)
                ids_out.append(top_i)
                tlp_out.append(top_v - lse[:, None])
            lp = torch.cat(lp_out).cpu().numpy()
            top_ids = torch.cat(ids_out).to(torch.int32).cpu().numpy()
            top_lp = torch.cat(tlp_out).cpu().numpy()
        return lp, top_ids, top_lp, padded

    def score(
        self,
        doc_ids: Sequence[str],
        texts: Sequence[str],
        ids: list[np.ndarray],
        stats: ScoreStats,
        progress: Progress | None = None,
        contexts: list[np.ndarray] | None = None,
    ) -> list[DocScores]:
        """Scores of every document token; `contexts` (token ids per document) are read before, never scored."""
        t0 = time.perf_counter()
        out: list[DocScores] = []
        for doc_id, text, tok in zip(doc_ids, texts, ids):
            sp = token_spans(text, tok, self.prior.token_bytes, self.byte_len, self.prior.replaceable)
            n = len(tok)
            out.append(
                DocScores(
                    doc_id=doc_id,
                    token_ids=tok.astype(np.int32),
                    char_start=sp.char_start,
                    char_end=sp.char_end,
                    whole=sp.whole,
                    logprob=np.full(n, np.nan, dtype=np.float32),
                    topk_ids=np.zeros((n, self.k), dtype=np.int32),
                    topk_logprobs=np.full((n, self.k), np.nan, dtype=np.float32),
                )
            )
            stats.inexact_documents += not sp.exact
        seqs, offsets = self.sequences(ids, contexts)
        windows, batches = self.plan(seqs, offsets)
        # Positions left to score per document; a document's unscored tokens count as done with it.
        remaining = {i: max(len(seq) - max(off, 1), 0) for i, (seq, off) in enumerate(zip(seqs, offsets, strict=True))}
        unscored = {i: len(ids[i]) - n for i, n in remaining.items()}
        for i, n in remaining.items():  # nothing to score (a 1-token document without a start token)
            if progress and n == 0:
                progress.advance(1, len(ids[i]))
        for batch in batches:
            lp, top_ids, top_lp, padded = self.forward_batch(batch, seqs)
            at = 0
            done_docs = done_tokens = 0
            for w in batch.windows:
                n_scored = w.end - w.score_from
                d = out[w.doc]
                a, b = w.score_from - offsets[w.doc], w.end - offsets[w.doc]  # document positions
                d.logprob[a:b] = lp[at : at + n_scored]
                d.topk_ids[a:b] = top_ids[at : at + n_scored]
                d.topk_logprobs[a:b] = top_lp[at : at + n_scored]
                at += n_scored
                remaining[w.doc] -= n_scored
                done_tokens += n_scored
                if remaining[w.doc] == 0:
                    done_docs += 1
                    done_tokens += unscored[w.doc]
            stats.batches += 1
            stats.padded_tokens += padded
            if progress:
                progress.advance(done_docs, done_tokens)
        stats.documents += len(out)
        stats.tokens += sum(len(t) for t in ids)
        stats.windows += len(windows)
        stats.fed_tokens += sum(w.length for w in windows)
        stats.seconds += time.perf_counter() - t0
        if out:
            stats.count_probabilities(np.concatenate([d.logprob for d in out]))
        return out
