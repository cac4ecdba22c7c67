"""Cutting long documents into overlapping windows so every token is scored with real left context.

Nothing is truncated: a sequence of n tokens is covered by windows of at most `window` tokens; each
window after the first re-reads `overlap` tokens of left context that it does not score again. Every
position first..n-1 is scored exactly once. A sequence is the document alone (first = 1: its first token
has no context and is not scored) or the document after a context of `first` tokens (the model's
document-start token, and the prompt of a prompt/response pair), so that every document token is scored.
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


def plan_windows(doc: int, n_tokens: int, window: int, overlap: int, first: int = 1) -> list[Window]:
    """The windows of one sequence, left to right; empty when there is nothing from `first` on to score.

    The first window starts at 0 when the first scored token fits in it; a context longer than that is
    read like any later window's: its last `overlap` tokens.
    """
    first = max(first, 1)
    if n_tokens <= first:
        return []
    start = 0 if first < window else first - overlap
    out = [Window(doc, start, min(n_tokens, start + window), first)]
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
