"""Rebuilding edited text from character spans: unchanged bytes are copied, never re-decoded."""

from __future__ import annotations

from collections.abc import Sequence


def rebuild_text(text: str, char_start: Sequence[int], char_end: Sequence[int], replacements: Sequence[str]) -> str:
    """Replace text[char_start[j]:char_end[j]] by replacements[j]; spans must be sorted and disjoint."""
    if not len(replacements):
        return text
    pieces = []
    at = 0
    for s, e, r in zip(char_start, char_end, replacements):
        if s < at or e < s:
            raise ValueError(f"spans overlap or run backwards at [{s}, {e}) after {at}")
        pieces.append(text[at:s])
        pieces.append(r)
        at = e
    pieces.append(text[at:])
    return "".join(pieces)
