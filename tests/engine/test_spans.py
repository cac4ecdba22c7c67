"""Byte-exact token spans over the tiny prior's real byte-level BPE tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from tledit_pipeline.scorer import tokenize
from tledit_pipeline.spans import token_spans

TEXTS = [
    "Fair is foul, and foul is fair.",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9",
    "\u65e5\u672c\u8a9e \u4e2d\u6587 \u6f22\u5b57\u304b\u306a",
    "Rocket \U0001f680 test tube \U0001f9ea grin \U0001f600\U0001f600",
    "e\u0301 a\u0308 o\u0302\u0323 combining marks",
    "line one\r\nline two\r\n\r\n\tindented\r\n",
    "mixed: \u00e9\u65e5\U0001f600e\u0301\r\n end",
    "x",
]


@pytest.fixture(scope="module")
def byte_len(tiny_prior):
    return np.array([len(b) if b else 0 for b in tiny_prior.token_bytes])


def _spans(prior, byte_len, text):
    ids = tokenize(prior, [text])[0]
    return ids, token_spans(text, ids, prior.token_bytes, byte_len, prior.replaceable)


@pytest.mark.parametrize("text", TEXTS)
def test_spans_are_exact_and_tile_the_text(tiny_prior, byte_len, text):
    ids, sp = _spans(tiny_prior, byte_len, text)
    n = len(ids)
    assert sp.exact
    assert len(sp.char_start) == len(sp.char_end) == len(sp.whole) == n
    assert sp.char_start.dtype == np.int32 and sp.char_end.dtype == np.int32 and sp.whole.dtype == bool
    # Spans run from 0 to the end of the text, in order, never backwards.
    assert sp.char_start[0] == 0
    assert sp.char_end[-1] == len(text)
    assert (sp.char_end >= sp.char_start).all()
    assert (np.diff(sp.char_start) >= 0).all()
    assert (np.diff(sp.char_end) >= 0).all()
    # Each token starts where the previous ended, or inside the same character when it is a byte piece.
    for i in range(1, n):
        assert sp.char_start[i] in (sp.char_end[i - 1], sp.char_end[i - 1] - 1)
    # Every character is covered.
    covered = np.zeros(len(text), dtype=bool)
    for s, e in zip(sp.char_start, sp.char_end):
        covered[s:e] = True
    assert covered.all()
    # Whole tokens own their characters: no other token's span overlaps theirs.
    for i in np.flatnonzero(sp.whole):
        s, e = sp.char_start[i], sp.char_end[i]
        assert e > s
        for j in range(n):
            if j != i:
                assert sp.char_end[j] <= s or sp.char_start[j] >= e, (i, j)


@pytest.mark.parametrize("text", TEXTS)
def test_whole_token_span_equals_its_bytes(tiny_prior, byte_len, text):
    ids, sp = _spans(tiny_prior, byte_len, text)
    assert sp.whole.any() or len(text) < 3 or not text.isascii()
    for i in np.flatnonzero(sp.whole):
        tb = tiny_prior.token_bytes[ids[i]]
        assert text[sp.char_start[i] : sp.char_end[i]] == tb.decode("utf-8")
        assert tiny_prior.replaceable[ids[i]]


@pytest.mark.parametrize("text", TEXTS)
def test_whole_tokens_and_byte_pieces_rebuild_the_text(tiny_prior, byte_len, text):
    """Walking the tokens: whole ones contribute their span text, runs of pieces decode together."""
    ids, sp = _spans(tiny_prior, byte_len, text)
    pieces, pending = [], b""
    for i, t in enumerate(ids):
        if sp.whole[i]:
            assert pending == b""  # a whole token never starts inside a character
            pieces.append(text[sp.char_start[i] : sp.char_end[i]])
        else:
            pending += tiny_prior.token_bytes[t]
            try:
                pieces.append(pending.decode("utf-8"))
                pending = b""
            except UnicodeDecodeError:
                pass
    assert pending == b""
    assert "".join(pieces) == text


def test_ascii_text_is_all_whole(tiny_prior, byte_len):
    text = "When shall we three meet again? In thunder, lightning, or in rain?"
    ids, sp = _spans(tiny_prior, byte_len, text)
    assert sp.whole.all()
    assert (sp.char_start[1:] == sp.char_end[:-1]).all()
    assert "".join(text[s:e] for s, e in zip(sp.char_start, sp.char_end)) == text


@pytest.mark.parametrize("text", ["\U0001f680\U0001f9ea", "\u6f22\u5b57\u304b\u306a", "a \U0001f9ea b \u9f8d c"])
def test_byte_fragments_are_not_whole(tiny_prior, byte_len, text):
    ids, sp = _spans(tiny_prior, byte_len, text)
    fragments = []
    for i, t in enumerate(ids):
        b = tiny_prior.token_bytes[t]
        try:
            b.decode("utf-8")
        except UnicodeDecodeError:
            fragments.append(i)
            assert not sp.whole[i]
    assert fragments, "the test text should be split into byte pieces by the tiny tokenizer"


def test_inexact_tokenization_makes_nothing_whole(tiny_prior, byte_len):
    text = "Fair is foul"
    ids = tokenize(tiny_prior, ["Fair is fowl"])[0]  # tokens that do not spell the text
    sp = token_spans(text, ids, tiny_prior.token_bytes, byte_len, tiny_prior.replaceable)
    assert not sp.exact
    assert not sp.whole.any()
    assert len(sp.char_start) == len(ids)
    assert sp.char_start[0] == 0 and sp.char_end[-1] == len(text)
