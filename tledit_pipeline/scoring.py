"""Token-confidence scoring: one teacher-forced pass of the prior over every token of every document.

For each token x_i it records log P(x_i | start, context, x_<i) and the prior's top-k replacement
candidates at that position, taken from the same logits. The model reads each document after its
document-start token (the BOS its tokenizer adds, else its end-of-text token: what a document follows in
pre-training), so the first token is scored too; with a context field (an SFT prompt) the context's tokens
come between them. Neither has a span or a row: only the document's own tokens are stored, eligible or
edited. Without a start token (document_start off, or a vocabulary with none) position 0 is not scored.
Candidates exclude special tokens and tokens that are not valid text on their own, so the edit step can
use any of them. Logits are computed only for the positions that are scored (not for padding, the start
token, the context or re-read context), which keeps the vocabulary projection off the hot path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tledit_pipeline.errors import TleditError
from tledit_pipeline.health import probability_histogram
from tledit_pipeline.lake import PartitionWriter, open_partition, partition_digest, partition_meta
from tledit_pipeline.prior import Prior, document_start_id
from tledit_pipeline.progress import Progress, Report
from tledit_pipeline.settings import ScoringSettings
from tledit_pipeline.spans import token_spans
from tledit_pipeline.windows import Window, pack_batches, plan_windows

LOGIT_ROWS = 1024  # positions projected to the vocabulary at once: bounds the logits' memory
WIDE = 8  # extra top entries taken so that blocked tokens rarely leave fewer than k candidates
# A chunk of documents is tokenized, scored and written before the next is read: these bound its size.
DOCS_PER_CHUNK = 4096
CHARS_PER_CHUNK = 1_000_000
# Between a context (an SFT prompt) and the edited field: the blank line most instruction formats put there.
CONTEXT_SEPARATOR = "\n\n"

SCORE_SCHEMA_FIELDS = [
    ("doc_id", pa.string()),
    ("pos", pa.int32()),
    ("token_id", pa.int32()),
    ("char_start", pa.int32()),
    ("char_end", pa.int32()),
    ("logprob", pa.float32()),
    ("whole", pa.bool_()),
]


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

    def sequences(self, ids: list[np.ndarray], contexts: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], list[int]]:
        """What the model reads for each document, [start] + context + document, and where the document begins."""
        head = np.array([] if self.start_id is None else [self.start_id], dtype=np.int64)
        seqs, offsets = [], []
        for i, tok in enumerate(ids):
            pre = head if contexts is None else np.concatenate([head, np.asarray(contexts[i], dtype=np.int64)])
            seqs.append(np.concatenate([pre, tok]) if len(pre) else tok)
            offsets.append(len(pre))
        return seqs, offsets

    def plan(self, seqs: list[np.ndarray], offsets: Sequence[int] | None = None) -> tuple[list[Window], list[list[Window]]]:
        """Every window of these model sequences (scored from each document's start), and the batches they run in."""
        windows = [
            w
            for i, seq in enumerate(seqs)
            for w in plan_windows(i, len(seq), self.window, self.overlap, first=offsets[i] if offsets else 1)
        ]
        return windows, pack_batches(windows, self.settings.batch_tokens)

    def hidden(self, batch: list[Window], ids: list[np.ndarray]):
        """Last hidden states at the scored positions of one right-padded batch, and their target tokens.

        No attention mask: with right padding, causal attention already keeps every real token from
        seeing the padding after it, and the mask-free call takes the fused causal attention kernel.
        """
        torch = self.torch
        dev = self.prior.device
        width = max(w.length for w in batch)
        inp = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        rows, cols = [], []
        for r, w in enumerate(batch):
            inp[r, : w.length] = ids[w.doc][w.start : w.end]
            # Hidden state at column c predicts the token at column c + 1.
            c = np.arange(w.score_from - w.start - 1, w.length - 1)
            rows.append(np.full(len(c), r))
            cols.append(c)
        row_t = torch.from_numpy(np.concatenate(rows)).to(dev)
        col_t = torch.from_numpy(np.concatenate(cols)).to(dev)
        inp_t = torch.from_numpy(inp).to(dev)
        hidden = self.body(input_ids=inp_t, use_cache=False).last_hidden_state
        return hidden[row_t, col_t], inp_t[row_t, col_t + 1], width * len(batch)

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

    def forward_batch(self, batch: list[Window], ids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
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
            for w in batch:
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


def to_table(docs: list[DocScores], k: int) -> pa.Table:
    """Long format, one row per token, in document order; compact candidate storage (int32, float16)."""
    if not docs:
        fields = SCORE_SCHEMA_FIELDS + [
            ("topk_ids", pa.list_(pa.int32(), k)),
            ("topk_logprobs", pa.list_(pa.float16(), k)),
        ]
        return pa.schema(fields).empty_table()
    counts = np.array([len(d.token_ids) for d in docs])
    pos = np.concatenate([np.arange(n, dtype=np.int32) for n in counts])
    lp = np.concatenate([d.logprob for d in docs])
    unscored = np.isnan(lp)
    top_ids = np.concatenate([d.topk_ids for d in docs]).reshape(-1)
    top_lp = np.concatenate([d.topk_logprobs for d in docs]).astype(np.float16).reshape(-1)
    return pa.table(
        {
            "doc_id": pa.array(np.repeat(np.array([d.doc_id for d in docs], dtype=object), counts), pa.string()),
            "pos": pa.array(pos),
            "token_id": pa.array(np.concatenate([d.token_ids for d in docs]).astype(np.int32)),
            "char_start": pa.array(np.concatenate([d.char_start for d in docs])),
            "char_end": pa.array(np.concatenate([d.char_end for d in docs])),
            "logprob": pa.array(lp, mask=np.isnan(lp)),
            "whole": pa.array(np.concatenate([d.whole for d in docs])),
            "topk_ids": pa.FixedSizeListArray.from_arrays(pa.array(top_ids), k, mask=pa.array(unscored)),
            "topk_logprobs": pa.FixedSizeListArray.from_arrays(pa.array(top_lp), k, mask=pa.array(unscored)),
        }
    )


def chunks(
    batches: Iterable[pa.RecordBatch | pa.Table], max_docs: int, max_chars: int
) -> Iterator[tuple[list, list, list | None]]:
    """(doc_ids, texts, contexts) in bounded pieces: what keeps memory flat however large the shard is.

    contexts is None unless the batches have a `context` column (see CONTEXT_COLUMN).
    """
    ids: list = []
    texts: list = []
    ctx: list | None = None
    chars = 0
    for b in batches:
        has_ctx = CONTEXT_COLUMN in b.schema.names
        ctx = [] if ctx is None and has_ctx else ctx
        cs = b.column(CONTEXT_COLUMN).to_pylist() if has_ctx else [None] * b.num_rows
        for doc_id, text, c in zip(b.column("doc_id").to_pylist(), b.column("text").to_pylist(), cs, strict=True):
            ids.append(doc_id)
            texts.append(text)
            if ctx is not None:
                ctx.append(c)
            chars += len(text) + len(c or "")
            if len(ids) >= max_docs or chars >= max_chars:
                yield ids, texts, ctx
                ids, texts, chars = [], [], 0
                ctx = [] if ctx is not None else None
    if ids:
        yield ids, texts, ctx


CONTEXT_COLUMN = "context"


def context_ids(prior: Prior, contexts: list[str | None]) -> list[np.ndarray]:
    """Token ids of each document's context followed by CONTEXT_SEPARATOR; none for a null or empty context."""
    out = [np.zeros(0, dtype=np.int64)] * len(contexts)
    given = [(i, c + CONTEXT_SEPARATOR) for i, c in enumerate(contexts) if c]
    for (i, _), tok in zip(given, tokenize(prior, [c for _, c in given]), strict=True):
        out[i] = tok
    return out


def score_chunks(
    prior: Prior,
    shard: str,
    batches: Iterable[pa.RecordBatch | pa.Table],
    settings: ScoringSettings,
    stats: ScoreStats,
    progress: Progress | None = None,
    docs_per_chunk: int = DOCS_PER_CHUNK,
    chars_per_chunk: int = CHARS_PER_CHUNK,
) -> Iterator[pa.Table]:
    """token_scores rows chunk by chunk (documents are sorted by length only within a chunk)."""
    scorer = Scorer(prior, settings)
    stats.threads = scorer.threads
    for doc_ids, texts, contexts in chunks(batches, docs_per_chunk, chars_per_chunk):
        ids = tokenize(prior, texts)
        ctx = None if contexts is None else context_ids(prior, contexts)
        table = to_table(scorer.score(doc_ids, texts, ids, stats, progress, contexts=ctx), scorer.k)
        yield table.add_column(0, "shard", pa.array([shard] * table.num_rows, pa.string()))


def score_schema(k: int) -> pa.Schema:
    return to_table([], k).schema.insert(0, pa.field("shard", pa.string()))


def score_table(
    prior: Prior,
    shard: str,
    docs: pa.Table,
    settings: ScoringSettings,
    report: Report | None = None,
    docs_per_chunk: int = DOCS_PER_CHUNK,
) -> tuple[pa.Table, ScoreStats]:
    """Score a raw_corpus table (doc_id, text[, context]) in memory; returns token_scores rows and run statistics."""
    stats = ScoreStats()
    progress = Progress("scoring", docs.num_rows, None, report)
    parts = list(score_chunks(prior, shard, [docs], settings, stats, progress, docs_per_chunk))
    progress.done()
    table = pa.concat_tables(parts) if parts else score_schema(settings.candidates).empty_table()
    return table, stats


class ContextError(TleditError):
    """The context field cannot be read as text for a shard; the message names the shard and field."""


def context_column(home: Path, shard: str, field: str) -> str:
    """The raw_corpus column holding source field `field` (a clashing name is kept as source_<name>)."""
    columns = partition_meta(home, "raw_corpus", shard).get("source_columns")
    names = dict(columns) if columns else {}
    if field not in names:
        raise ContextError(f"shard {shard!r} has no field {field!r} to use as context (context_field)")
    if names[field] == "text":
        raise ContextError(f"context field {field!r} is the edited field itself (shard {shard!r})")
    return names[field]


def _context_texts(shard: str, field: str, doc_ids: list, values: list) -> pa.Array:
    """The context values as text: a null is no context; anything but a string is a clear error."""
    for doc_id, v in zip(doc_ids, values, strict=True):
        if v is not None and not isinstance(v, str):
            raise ContextError(
                f"shard {shard!r}, document {doc_id!r}: context field {field!r} holds a {type(v).__name__}, not text"
            )
    return pa.array(values, pa.string())


def _with_context(home: Path, shard: str, texts: Iterable[pa.RecordBatch], field: str, column: str) -> Iterator[pa.Table]:
    """Each batch of (doc_id, text) with its documents' context from raw_corpus, matched row by row."""
    from tledit_pipeline.source import passthrough_values  # JSON columns (mixed types) decoded

    raw = open_partition(home, "raw_corpus", shard).iter_batches(batch_size=64, columns=["doc_id", column])
    rows = (r for b in raw for r in zip(b.column("doc_id").to_pylist(), passthrough_values(b.column(column)), strict=True))
    for b in texts:
        ids = b.column("doc_id").to_pylist()
        found = [next(rows, (None, None)) for _ in ids]
        if [d for d, _ in found] != ids:
            raise ContextError(f"shard {shard!r}: the text to score and raw_corpus list other documents; re-materialize it")
        ctx = _context_texts(shard, field, ids, [c for _, c in found])
        yield pa.table({"doc_id": pa.array(ids, pa.string()), "text": b.column("text"), CONTEXT_COLUMN: ctx})


def score_partition(
    prior: Prior,
    home: Path,
    shard: str,
    settings: ScoringSettings,
    meta: Mapping[str, Any] | None = None,
    report: Report | None = None,
    chars_per_chunk: int = CHARS_PER_CHUNK,
    generation: int = 0,
) -> ScoreStats:
    """Generation g's text in (raw_corpus for 0), its scores out (token_scores, token_scores_g{g}), streamed.

    Memory stays flat as shards grow. The footer records which text asset and bytes were scored, so the
    edit step can refuse scores of other text, and the first scored position.
    """
    from tledit_pipeline.generations import scores_asset, text_asset

    source = text_asset(generation)
    digest = partition_digest(home, source, shard)
    text = open_partition(home, source, shard)
    stats = ScoreStats()
    progress = Progress(
        "scoring" if generation == 0 else f"scoring generation {generation}", text.metadata.num_rows, None, report
    )
    pieces: Iterable = text.iter_batches(batch_size=64, columns=["doc_id", "text"])
    if settings.context_field:
        pieces = _with_context(home, shard, pieces, settings.context_field, context_column(home, shard, settings.context_field))
    first = 0 if settings.document_start and document_start_id(prior.tokenizer) is not None else 1
    with PartitionWriter(home, scores_asset(generation), shard, score_schema(settings.candidates)) as out:
        for table in score_chunks(prior, shard, pieces, settings, stats, progress, chars_per_chunk=chars_per_chunk):
            out.write(table)
        out.meta = dict(meta or {}) | {
            "text_asset": source,
            "text_digest": digest,
            "first_scored": first,  # every position from here on has a score (with a context, position 0 may too)
        }
    progress.done()
    return stats
