"""The edited corpus of one shard: the edit rule over stored token scores, then the text rebuild.

A pure function of (documents, token scores, prior vocabulary, edit settings): re-editing with another
threshold reads stored scores and never loads the model. Generation 1 edits the raw text with
token_scores; generation g edits generation g-1's text with its scores (see generations.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tledit_pipeline.edit import apply_edit_rule, doc_key
from tledit_pipeline.errors import TleditError
from tledit_pipeline.generations import scores_asset, text_asset
from tledit_pipeline.lake import partition_digest, partition_meta, read_partition, write_partition
from tledit_pipeline.rebuild import rebuild_text
from tledit_pipeline.settings import EditSettings
from tledit_pipeline.vocab import read_vocab

EDITED_SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("doc_id", pa.string()),
        ("text", pa.string()),
        ("n_tokens", pa.int32()),
        ("n_scored", pa.int32()),  # tokens with a score: the shares' denominator
        ("n_eligible", pa.int32()),
        ("n_changed", pa.int32()),
        ("n_deleted", pa.int32()),
    ]
)


class ScoresMismatch(TleditError):
    """Stored scores do not cover the raw documents (stale or partial token_scores)."""


@dataclass
class EditStats:
    documents: int = 0
    tokens: int = 0
    scored: int = 0
    eligible: int = 0
    changed: int = 0
    deleted: int = 0

    @property
    def eligible_share(self) -> float:
        return self.eligible / self.scored if self.scored else 0.0

    @property
    def changed_share(self) -> float:
        """Changed tokens over all scored tokens."""
        return self.changed / self.scored if self.scored else 0.0

    @property
    def deleted_share(self) -> float:
        """Deleted tokens over all scored tokens."""
        return self.deleted / self.scored if self.scored else 0.0

    @property
    def changed_of_eligible(self) -> float:
        return self.changed / self.eligible if self.eligible else 0.0


def _fixed_list(col: pa.ChunkedArray, width: int, dtype) -> np.ndarray:
    """FixedSizeList column -> [n, width] array; null rows (position 0, never eligible) become 0."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    flat = arr.flatten() if arr.null_count == 0 else arr.fill_null(pa.scalar([0] * width, arr.type)).flatten()
    return flat.to_numpy(zero_copy_only=False).astype(dtype).reshape(-1, width)


def edit_shard(
    shard: str,
    raw: pa.Table,
    scores: pa.Table,
    vocab_text: list[str | None],
    settings: EditSettings,
    generation: int = 1,
) -> tuple[pa.Table, EditStats]:
    """One edited row per document of `raw` (the text being edited), in its order; vectorized over the shard."""
    doc_ids = np.asarray(scores.column("doc_id").to_numpy(zero_copy_only=False), dtype=object)
    n = len(doc_ids)
    token_ids = scores.column("token_id").to_numpy()
    pos = scores.column("pos").to_numpy()
    k = scores.schema.field("topk_ids").type.list_size
    if settings.top_k > k:
        raise ScoresMismatch(f"top_k={settings.top_k} but token_scores store {k} candidates; rescore with more")
    # Documents are stored contiguously, each starting at pos 0.
    starts = np.flatnonzero(pos == 0)
    ends = np.append(starts[1:], n)
    keys = np.repeat(np.array([doc_key(doc_ids[s]) for s in starts], dtype=np.uint64), ends - starts)
    decision = apply_edit_rule(
        token_ids=token_ids,
        pos=pos,
        logprob=scores.column("logprob").to_numpy(zero_copy_only=False).astype(np.float32),
        whole=scores.column("whole").to_numpy(zero_copy_only=False).astype(bool),
        topk_ids=_fixed_list(scores.column("topk_ids"), k, np.int32),
        topk_logprobs=_fixed_list(scores.column("topk_logprobs"), k, np.float32),
        doc_keys=keys,
        settings=settings,
        generation=generation,
    )
    scored = ~np.isnan(scores.column("logprob").to_numpy(zero_copy_only=False).astype(np.float32))
    cut = decision.changed | decision.deleted
    char_start = scores.column("char_start").to_numpy()
    char_end = scores.column("char_end").to_numpy()
    by_doc = {doc_ids[s]: (s, e) for s, e in zip(starts, ends)}

    raw_ids = raw.column("doc_id").to_pylist()
    missing = [d for d in raw_ids if d not in by_doc]
    if missing:
        raise ScoresMismatch(
            f"shard {shard!r}: token_scores has no rows for {len(missing)} raw document(s), e.g. {missing[0]!r}; "
            "re-materialize token_scores"
        )
    texts, n_tok, n_scored, n_elig, n_chg, n_del = [], [], [], [], [], []
    for doc_id, text in zip(raw_ids, raw.column("text").to_pylist(), strict=True):
        s, e = by_doc[doc_id]
        at = np.flatnonzero(cut[s:e]) + s  # resampled or deleted, in text order
        new = ["" if decision.deleted[i] else vocab_text[decision.new_ids[i]] for i in at]
        texts.append(rebuild_text(text, char_start[at], char_end[at], new))
        n_tok.append(e - s)
        n_scored.append(int(scored[s:e].sum()))
        n_elig.append(int(decision.eligible[s:e].sum()))
        n_chg.append(int(decision.changed[s:e].sum()))
        n_del.append(int(decision.deleted[s:e].sum()))
    table = pa.table(
        {
            "shard": [shard] * len(raw_ids),
            "doc_id": raw_ids,
            "text": texts,
            "n_tokens": n_tok,
            "n_scored": n_scored,
            "n_eligible": n_elig,
            "n_changed": n_chg,
            "n_deleted": n_del,
        },
        schema=EDITED_SCHEMA,
    )
    stats = EditStats(
        documents=len(raw_ids),
        tokens=n,
        scored=int(scored.sum()),
        eligible=int(decision.eligible.sum()),
        changed=int(decision.changed.sum()),
        deleted=int(decision.deleted.sum()),
    )
    return table, stats


def edit_from_lake(home: Path, shard: str, settings: EditSettings, generation: int = 1) -> tuple[pa.Table, EditStats]:
    """Generation g of a shard's edited text from the lake, not written: no model needed.

    Reads generation g-1's text (raw_corpus for g = 1), the prior's scores of that text and the prior's
    vocabulary. It refuses scores computed from other bytes. The edit sweep (sweep.py) calls it too.
    """
    source, scores_of = text_asset(generation - 1), scores_asset(generation - 1)
    scored_from = partition_meta(home, scores_of, shard)
    if scored_from.get("text_digest") != partition_digest(home, source, shard):
        raise ScoresMismatch(f"shard {shard!r}: {scores_of} were computed from other {source} bytes; re-materialize {scores_of}")
    text = read_partition(home, source, shard, columns=["doc_id", "text"])
    scores = read_partition(home, scores_of, shard)
    vocab = read_vocab(home, scored_from["fingerprint"])
    return edit_shard(shard, text, scores, vocab, settings, generation=generation)


def edit_partition(home: Path, shard: str, settings: EditSettings, generation: int = 1) -> EditStats:
    """Generation g of a shard's edited corpus, written from the lake: what the asset and a threshold backfill run."""
    table, stats = edit_from_lake(home, shard, settings, generation)
    write_partition(home, text_asset(generation), shard, table, meta={"edit": settings.version(), "generation": generation})
    return stats
