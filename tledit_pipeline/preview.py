"""Preview: one text scored by the prior and edited with the current settings, shown token by token.

For a person choosing p, k or the strategy: which tokens the prior is over-confident about (eligible)
and what the edit makes of them, before backfilling a corpus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tledit_pipeline.edit import apply_edit_rule, doc_key
from tledit_pipeline.edited import _fixed_list
from tledit_pipeline.prior import Prior
from tledit_pipeline.rebuild import rebuild_text
from tledit_pipeline.scoring import score_table
from tledit_pipeline.settings import Settings

PREVIEW_ID = "preview"


@dataclass(frozen=True)
class PreviewToken:
    text: str  # the token's characters in the original
    prob: float | None  # P(token | original prefix); None where unscored (the first token without a start token)
    eligible: bool
    replacement: str | None  # the new text where the token changed
    deleted: bool = False  # cut from the text (P < drop_below)


@dataclass(frozen=True)
class Preview:
    original: str
    edited: str
    tokens: list[PreviewToken]

    @property
    def n_eligible(self) -> int:
        return sum(t.eligible for t in self.tokens)

    @property
    def n_changed(self) -> int:
        return sum(t.replacement is not None for t in self.tokens)

    @property
    def n_deleted(self) -> int:
        return sum(t.deleted for t in self.tokens)


def preview(prior: Prior, text: str, settings: Settings) -> Preview:
    """Score and edit one text exactly as a shard would be (same rule, same keyed randomness)."""
    raw = pa.table({"doc_id": [PREVIEW_ID], "text": [text]})
    scores, _ = score_table(prior, PREVIEW_ID, raw, settings.scoring, report=lambda _msg: None)
    k = scores.schema.field("topk_ids").type.list_size
    token_ids = scores.column("token_id").to_numpy()
    pos = scores.column("pos").to_numpy()
    logprob = scores.column("logprob").to_numpy(zero_copy_only=False).astype(np.float32)
    decision = apply_edit_rule(
        token_ids=token_ids,
        pos=pos,
        logprob=logprob,
        whole=scores.column("whole").to_numpy(zero_copy_only=False).astype(bool),
        topk_ids=_fixed_list(scores.column("topk_ids"), k, np.int32),
        topk_logprobs=_fixed_list(scores.column("topk_logprobs"), k, np.float32),
        doc_keys=np.full(len(pos), doc_key(PREVIEW_ID), dtype=np.uint64),
        settings=settings.edit,
    )
    vocab = prior.vocab_table().column("text").to_pylist()
    start = scores.column("char_start").to_numpy()
    end = scores.column("char_end").to_numpy()
    cut = np.flatnonzero(decision.changed | decision.deleted)
    edited = rebuild_text(text, start[cut], end[cut], ["" if decision.deleted[i] else vocab[decision.new_ids[i]] for i in cut])
    # Byte pieces of one character share it: each character is shown once, with the first piece.
    shown_from = np.maximum(start, np.concatenate([[0], np.maximum.accumulate(end)[:-1]]))
    tokens = [
        PreviewToken(
            text=text[shown_from[i] : end[i]],
            prob=None if math.isnan(logprob[i]) else float(np.exp(logprob[i])),
            eligible=bool(decision.eligible[i]),
            replacement=vocab[decision.new_ids[i]] if decision.changed[i] else None,
            deleted=bool(decision.deleted[i]),
        )
        for i in range(len(pos))
    ]
    return Preview(original=text, edited=edited, tokens=tokens)


# ANSI colours by probability band: the eligible band stands out, the rest fades from green to grey.
_RESET, _BOLD = "\x1b[0m", "\x1b[1m"


def _colour(prob: float | None, eligible: bool) -> str:
    if eligible:
        return "\x1b[1;30;43m"  # black on yellow
    if prob is None:
        return "\x1b[2m"
    if prob >= 0.9:
        return "\x1b[33m"
    if prob >= 0.5:
        return "\x1b[32m"
    if prob >= 0.1:
        return "\x1b[36m"
    return "\x1b[2;37m"


def render(result: Preview, threshold: float, colour: bool = False) -> str:
    """Original with per-token probabilities, then the edited text and the list of changes."""
    parts = []
    for t in result.tokens:
        shown = t.text.replace("\n", "\u21b5\n")
        if colour:
            parts.append(f"{_colour(t.prob, t.eligible)}{shown}{_RESET}")
            continue
        p = "-" if t.prob is None else f"{t.prob:.2f}" if t.prob < 0.995 else f"{t.prob:.3f}"
        parts.append(f"{shown}[{p}{'*' if t.eligible else 'x' if t.deleted else ''}]")
    lines = [
        f"tokens {len(result.tokens)}, eligible {result.n_eligible} (P >= {threshold}), changed {result.n_changed}"
        + (f", deleted {result.n_deleted}" if result.n_deleted else ""),
        "",
        "original, with P(token | original prefix)"
        + (
            ": yellow = eligible, orange >= 0.9, green >= 0.5, cyan >= 0.1, grey < 0.1"
            if colour
            else "; * = eligible" + (", x = deleted" if result.n_deleted else "")
        ),
        "".join(parts),
        "",
        "edited",
    ]
    if colour:
        edited_parts = []
        for t in result.tokens:
            edited_parts.append(
                "" if t.deleted else f"{_BOLD}\x1b[4m{t.replacement}{_RESET}" if t.replacement is not None else t.text
            )
        lines.append("".join(edited_parts))
    else:
        lines.append(result.edited)
    if result.n_changed or result.n_deleted:
        lines += ["", "changes"]
        lines += [
            f"  {t.text!r} (P={t.prob:.4f}) -> {'(deleted)' if t.deleted else repr(t.replacement)}"
            for t in result.tokens
            if t.replacement is not None or t.deleted
        ]
    return "\n".join(lines)
