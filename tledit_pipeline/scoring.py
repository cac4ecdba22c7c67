"""Token-confidence scoring: one teacher-forced pass of the prior over every token of every shard.

For each token x_i it records log P(x_i | start, context, x_<i) and the prior's top-k replacement
candidates at that position (tledit_pipeline.scorer computes both from the same logits). The model reads
each document after its document-start token (the BOS its tokenizer adds, else its end-of-text token: what
a document follows in pre-training), so the first token is scored too; with a context field (an SFT
prompt) the context's tokens come between them. Neither has a span or a row: only the document's own
tokens are stored, eligible or edited. Without a start token (document_start off, or a vocabulary with
none) position 0 is not scored. This module streams a shard through the Scorer in bounded chunks and
writes the token_scores partition.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tledit_pipeline.errors import TleditError
from tledit_pipeline.lake import PartitionWriter, open_partition, partition_digest, partition_meta
from tledit_pipeline.prior import Prior, document_start_id
from tledit_pipeline.progress import Progress, Report
from tledit_pipeline.scorer import DocScores, Scorer, ScoreStats, tokenize
from tledit_pipeline.settings import ScoringSettings

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
