"""Byte-exact character spans of tokens, so text can be rebuilt without re-decoding.

A token's span indexes into the original Python string. A token is `whole` when it starts and ends on
character boundaries (not a byte piece of an emoji or CJK character) and is valid text on its own:
only whole tokens may ever be edited.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Spans:
    char_start: np.ndarray  # int32 per token
    char_end: np.ndarray  # int32 per token
    whole: np.ndarray  # bool per token: editable in place
    exact: bool  # the tokens' bytes concatenate to exactly the text's bytes


def token_spans(text: str, ids: np.ndarray, token_bytes: list, byte_len: np.ndarray, replaceable: np.ndarray) -> Spans:
    encoded = text.encode("utf-8")
    ids = np.asarray(ids, dtype=np.int64)
    if b"".join(token_bytes[i] or b"" for i in ids) != encoded:
        return _inexact(text, len(ids))
    lens = byte_len[ids]
    b_end = np.cumsum(lens)
    b_start = b_end - lens
    raw = np.frombuffer(encoded, dtype=np.uint8)
    # A byte starts a character unless it is a UTF-8 continuation byte (10xxxxxx).
    is_start = np.append((raw & 0xC0) != 0x80, True)  # sentinel: end of text is a boundary
    char_of = np.append(np.cumsum(is_start[:-1]) - 1, len(text))  # char index holding each byte
    starts_ok = is_start[b_start]
    ends_ok = is_start[b_end]
    char_start = char_of[b_start]
    # A token ending mid-character still covers that character, for reporting only.
    char_end = np.where(ends_ok, char_of[b_end], char_of[np.maximum(b_end - 1, 0)] + 1)
    whole = starts_ok & ends_ok & replaceable[ids]
    return Spans(char_start.astype(np.int32), char_end.astype(np.int32), whole, True)


def _inexact(text: str, n: int) -> Spans:
    """The tokenizer changed the text (normalization): no token may be edited; spans are approximate."""
    edges = np.linspace(0, len(text), n + 1).astype(np.int32)
    return Spans(edges[:-1], edges[1:], np.zeros(n, dtype=bool), False)
