"""The edited corpus of one shard: the edit rule over stored token scores, then the text rebuild.

A pure function of (raw documents, token scores, prior vocabulary, edit settings): re-editing with
another threshold reads stored scores and never loads the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tledit_pipeline.edit import apply_edit_rule, doc_key
from tledit_pipeline.errors import TleditError
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
        ("n_eligible", pa.int32()),
        ("n_changed", pa.int32()),
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

    @property
    def eligible_share(self) -> float:
        return self.eligible / self.scored if self.scored else 0.0

    @property
    def changed_share(self) -> float:
        """Changed tokens over all scored tokens."""
        return self.changed / self.scored if self.scored else 0.0

    @property
    def changed_of_eligible(self) -> float:
        return self.changed / self.eligible if self.eligible else 0.0


def _fixed_list(col: pa.ChunkedArray, width: int, dtype) -> np.ndarray:
    """FixedSizeList column -> [n, width] array; null rows (position 0, never eligible) become 0."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    flat = arr.flatten() if arr.null_count == 0 else arr.fill_null(pa.scalar([0] * width, arr.type)).flatten()
    return flat.to_numpy(zero_copy_only=False).astype(dtype).reshape(-1, width)


def edit_shard(
    shard: str, raw: pa.Table, scores: pa.Table, vocab_text: list[str | None], settings: EditSettings
) -> tuple[pa.Table, EditStats]:
    """One edited row per raw document, in raw order; the rule runs vectorized over the whole shard."""
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
    keys = np.repeat(
        np.array([doc_key(doc_ids[s]) for s in starts], dtype=np.uint64), ends - starts
    )
    decision = apply_edit_rule(
        token_ids=token_ids,
        pos=pos,
        logprob=scores.column("logprob").to_numpy(zero_copy_only=False).astype(np.float32),
        whole=scores.column("whole").to_numpy(zero_copy_only=False).astype(bool),
        topk_ids=_fixed_list(scores.column("topk_ids"), k, np.int32),
        topk_logprobs=_fixed_list(scores.column("topk_logprobs"), k, np.float32),
        doc_keys=keys,
        settings=settings,
    )
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
    texts, n_tok, n_elig, n_chg = [], [], [], []
    for doc_id, text in zip(raw_ids, raw.column("text").to_pylist()):
        s, e = by_doc[doc_id]
        changed = np.flatnonzero(decision.changed[s:e]) + s
        texts.append(rebuild_text(text, char_start[changed], char_end[changed], [vocab_text[i] for i in decision.new_ids[changed]]))
        n_tok.append(e - s)
        n_elig.append(int(decision.eligible[s:e].sum()))
        n_chg.append(len(changed))
    table = pa.table(
        {
            "shard": [shard] * len(raw_ids),
            "doc_id": raw_ids,
            "text": texts,
            "n_tokens": n_tok,
            "n_eligible": n_elig,
            "n_changed": n_chg,
        },
        schema=EDITED_SCHEMA,
    )
    stats = EditStats(
        documents=len(raw_ids),
        tokens=n,
        scored=int((pos > 0).sum()),
        eligible=int(decision.eligible.sum()),
        changed=int(decision.changed.sum()),
    )
    return table, stats


def edit_partition(home: Path, shard: str, settings: EditSettings) -> EditStats:
    """edited_corpus written from the lake (raw_corpus, token_scores, the prior's vocabulary): no model needed.

    What the asset and a threshold backfill run; it refuses scores computed from other raw_corpus bytes.
    """
    scored_from = partition_meta(home, "token_scores", shard)
    if scored_from.get("raw_digest") != partition_digest(home, "raw_corpus", shard):
        raise ScoresMismatch(
            f"shard {shard!r}: token_scores were computed from other raw_corpus bytes; re-materialize token_scores"
        )
    raw = read_partition(home, "raw_corpus", shard, columns=["doc_id", "text"])
    scores = read_partition(home, "token_scores", shard)
    vocab = read_vocab(home, scored_from["fingerprint"])
    table, stats = edit_shard(shard, raw, scores, vocab, settings)
    write_partition(home, "edited_corpus", shard, table, meta={"edit": settings.version()})
    return stats
