"""Cutting long documents into overlapping windows so every token is scored with real left context.

Nothing is truncated: a sequence of n tokens is covered by windows of at most `window` tokens; each
window after the first re-reads `overlap` tokens of left context that it does not score again. Every
position first..n-1 is scored exactly once. A sequence is the document alone (first = 1: its first token
has no context and is not scored) or the document after a context of `first` tokens (the model's
document-start token, and the prompt of a prompt/response pair), so that every document token is scored.

Windows are then packed into rows and batches (pack_batches): several short windows share a row, each
attending only to itself (tledit_pipeline.packing), so the model runs on text, not padding.
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


# Row widths are multiples of WIDTH_STEP (never past the window). The CPU kernels (oneDNN, bf16) compile and
# cache code per input shape: one width per batch made every shard new shapes, and a process's memory grew by
# ~0.5 GB over its first few hundred shards; a few dozen widths keep it flat and hit the cache.
WIDTH_STEP = 64
# A row opened by a short window is this wide (at most the window), so short windows pack into it together.
ROW_WIDTH = 512


class Batch(NamedTuple):
    """Rows of `width` tokens, each holding windows end to end (one window, or several packed); the rest padding."""

    width: int
    rows: list[list[Window]]

    @property
    def windows(self) -> list[Window]:
        """Every window, row by row, left to right: the order of the batch's scored positions."""
        return [w for row in self.rows for w in row]

    @property
    def packed(self) -> bool:
        """Some row holds more than one window (the model needs per-window attention)."""
        return any(len(row) > 1 for row in self.rows)

    @property
    def padded_tokens(self) -> int:
        return self.width * len(self.rows)


def row_width(length: int, window: int, step: int | None = None, least: int = 0) -> int:
    """The width of a row opened by a window of `length` tokens: a multiple of step, at least `least`, never
    past the window (a window is never longer than it), and never shorter than the window itself."""
    step = step or WIDTH_STEP
    return max(length, min(max(-(-length // step) * step, least), window))


def pack_batches(
    windows: list[Window], batch_tokens: int, window: int | None = None, pack: bool = True, step: int | None = None
) -> list[Batch]:
    """Rows of windows, longest first, then batches of equal-width rows under a padded-token budget.

    With `pack`, best-fit decreasing: each window goes into the open row with the least room that holds it
    (ties: the earliest row), else opens a row (ROW_WIDTH wide for a short window), so short windows fill
    rows and long windows' rounding slack; a row then ends as wide as its windows, rounded up to `step`, so
    padding is what that rounding leaves. Without it every window has a row of its own, rounded up to `step`.
    Widths come from a bounded set (multiples of step up to the window). Deterministic: the result depends
    only on the windows, not on their order.
    """
    from bisect import bisect_left, insort

    cap = window if window is not None else max((w.length for w in windows), default=0)
    least = min(ROW_WIDTH, cap) if pack else 0
    ordered = sorted(windows, key=lambda w: (-w.length, w.doc, w.start))
    rows: list[list[Window]] = []
    room: list[tuple[int, int]] = []  # (free tokens, row index) of open rows, sorted
    for w in ordered:
        if pack:
            i = bisect_left(room, (w.length, -1))
            if i < len(room):
                free, r = room.pop(i)
                rows[r].append(w)
                if free > w.length:
                    insort(room, (free - w.length, r))
                continue
        width = row_width(w.length, max(cap, w.length), step, least)
        rows.append([w])
        if pack and width > w.length:
            insort(room, (width - w.length, len(rows) - 1))
    # A row ends as wide as what it holds, rounded up (the last rows opened at ROW_WIDTH are rarely full);
    # rows of one width, widest first, then make that width's batches.
    final = [row_width(sum(w.length for w in row), max(cap, row[0].length), step) for row in rows]
    batches: list[Batch] = []
    for r in sorted(range(len(rows)), key=lambda r: (-final[r], r)):
        last = batches[-1] if batches else None
        if last is not None and last.width == final[r] and (len(last.rows) + 1) * final[r] <= batch_tokens:
            last.rows.append(rows[r])
        else:
            batches.append(Batch(final[r], [rows[r]]))
    return batches
