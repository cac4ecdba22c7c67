"""Cutting long documents into overlapping windows so every token is scored with real left context.

Nothing is truncated: a document of n tokens is covered by windows of at most `window` tokens; each
window after the first re-reads `overlap` tokens of left context that it does not score again. Every
position 1..n-1 is scored exactly once; position 0 has no context and is never scored.
"""

from __future__ import annotations

from typing import NamedTuple


class Window(NamedTuple):
    doc: int  # index of the document in its batch of documents
    start: int  # first token fed to the model
    end: int  # one past the last token fed
    score_from: int  # first token whose probability this window reports

    @property
    def length(self) -> int:
        return self.end - self.start


def plan_windows(doc: int, n_tokens: int, window: int, overlap: int) -> list[Window]:
    """The windows of one document, left to right; empty for documents of fewer than two tokens."""
    if n_tokens < 2:
        return []
    out = [Window(doc, 0, min(n_tokens, window), 1)]
    while out[-1].end < n_tokens:
        prev = out[-1]
        start = prev.end - max(overlap, 1)  # the token before the first scored one is always re-read
        out.append(Window(doc, start, min(start + window, n_tokens), prev.end))
    return out


# Padding a window may carry in its batch: at most this share of the batch's width, or SMALL tokens.
MAX_PADDING = 0.10
SMALL = 2


def pack_batches(windows: list[Window], batch_tokens: int) -> list[list[Window]]:
    """Longest first, then greedy buckets of similar length under a padded-token budget.

    A batch is padded to its first (longest) window; a window starts a new batch when the budget is full
    or when it would be padded by more than MAX_PADDING of the width (SMALL tokens for tiny windows), so
    padding stays small while batches stay as large as the lengths allow.
    """
    ordered = sorted(windows, key=lambda w: (-w.length, w.doc, w.start))
    batches: list[list[Window]] = []
    current: list[Window] = []
    for w in ordered:
        width = current[0].length if current else w.length
        too_short = width - w.length > max(MAX_PADDING * width, SMALL)
        if current and ((len(current) + 1) * width > batch_tokens or too_short):
            batches.append(current)
            current = []
        current.append(w)
    if current:
        batches.append(current)
    return batches
