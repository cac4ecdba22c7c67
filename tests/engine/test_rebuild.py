"""Text rebuild from character spans: only the chosen spans change."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tledit_pipeline.rebuild import rebuild_text


def test_no_replacements_returns_the_input_object():
    text = "Caf\u00e9 \U0001f600 e\u0301\r\n"
    out = rebuild_text(text, [], [], [])
    assert out == text
    assert out is text


def test_simple_replacements():
    text = "Fair is foul, and foul is fair."
    assert rebuild_text(text, [5, 18], [7, 22], [" was", "fowl"]) == "Fair  was foul, and fowl is fair."
    assert rebuild_text(text, [0], [4], ["Foul"]) == "Foul is foul, and foul is fair."
    assert rebuild_text(text, [len(text) - 1], [len(text)], ["!"]) == text[:-1] + "!"


def test_adjacent_and_empty_spans():
    assert rebuild_text("abcdef", [1, 3], [3, 5], ["X", "Y"]) == "aXYf"
    assert rebuild_text("abc", [1], [1], ["-"]) == "a-bc"  # empty span inserts
    assert rebuild_text("abc", [0], [3], [""]) == ""


def test_non_ascii_replacements_keep_other_characters():
    text = "\u65e5\u672c\u8a9e \U0001f600 e\u0301"
    assert rebuild_text(text, [4], [5], ["\U0001f680"]) == "\u65e5\u672c\u8a9e \U0001f680 e\u0301"


@pytest.mark.parametrize(
    "starts, ends",
    [
        ([0, 2], [3, 5]),  # second starts inside the first
        ([2, 0], [4, 1]),  # not sorted
        ([3], [1]),  # backwards
        ([1, 1], [4, 2]),
    ],
)
def test_overlapping_or_backward_spans_raise(starts, ends):
    with pytest.raises(ValueError, match="overlap or run backwards"):
        rebuild_text("abcdefgh", starts, ends, ["x"] * len(starts))


@st.composite
def texts_with_spans(draw):
    text = draw(st.text(max_size=120))
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=12)))
    # Pair consecutive cut points into sorted, disjoint spans (adjacent and empty spans allowed).
    spans = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
    reps = draw(st.lists(st.text(max_size=6), min_size=len(spans), max_size=len(spans)))
    return text, spans, reps


@given(texts_with_spans())
@settings(max_examples=400, deadline=None)
def test_everything_outside_the_spans_is_kept(case):
    text, spans, reps = case
    out = rebuild_text(text, [s for s, _ in spans], [e for _, e in spans], reps)
    # Walk the output: between spans the original characters appear unchanged and in place.
    at_in, at_out = 0, 0
    for (s, e), r in zip(spans, reps):
        gap = text[at_in:s]
        assert out[at_out : at_out + len(gap)] == gap
        at_out += len(gap)
        assert out[at_out : at_out + len(r)] == r
        at_out += len(r)
        at_in = e
    assert out[at_out:] == text[at_in:]
    assert len(out) == len(text) - sum(e - s for s, e in spans) + sum(len(r) for r in reps)


@given(texts_with_spans())
@settings(max_examples=200, deadline=None)
def test_replacing_spans_with_themselves_is_identity(case):
    text, spans, _ = case
    starts, ends = [s for s, _ in spans], [e for _, e in spans]
    assert rebuild_text(text, starts, ends, [text[s:e] for s, e in spans]) == text


@given(st.text(min_size=2, max_size=50), st.data())
@settings(max_examples=200, deadline=None)
def test_overlap_property_raises(text, data):
    s1 = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    e1 = data.draw(st.integers(min_value=s1 + 1, max_value=len(text)))
    s2 = data.draw(st.integers(min_value=0, max_value=e1 - 1))  # starts before the first span ends
    e2 = data.draw(st.integers(min_value=s2, max_value=len(text)))
    with pytest.raises(ValueError):
        rebuild_text(text, [s1, s2], [e1, e2], ["a", "b"])
