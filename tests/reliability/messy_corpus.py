"""A deliberately messy corpus: one file per kind of bad input, with what the reader must make of it.

Each case records how many documents the file holds (counted here, by the writer, not by the reader) and
how many must be accepted, or the message a file that cannot be read at all must fail with.
"""

from __future__ import annotations

import datetime
import decimal
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CJK_EMOJI = "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0 \u4e2d\u6587 \U0001f600\U0001f680 \U0001f468\u200d\U0001f469\u200d\U0001f467"
COMBINING = "e\u0301 a\u0308 o\u0302\u0323 \u1100\u1161\u11a8"
CRLF_TEXT = "Fair is foul,\r\nand foul is fair.\r\n\r\nHover through the fog.\r\n"


@dataclass
class Case:
    """One source file and the outcome the pipeline owes it."""

    name: str  # file name in the source folder
    what: str  # the bad input it exercises
    documents: int = 0  # documents written into the file
    accepted: int = 0  # of them, how many must be processed
    fails: str | None = None  # a file that cannot be read at all: a regex its error must match
    reasons: list[str] = field(default_factory=list)  # expected reject reasons, by substring, in file order
    texts: list[str] = field(default_factory=list)  # exact texts the accepted documents must have

    @property
    def rejected(self) -> int:
        return self.documents - self.accepted


def _lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def _j(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def build(folder: Path) -> list[Case]:
    """Write every case into `folder`; returns them with their expected outcomes."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    good = [
        {"text": "Plain English text, nothing odd.", "n": 1, "meta": {"url": "http://a", "tags": ["x"]}, "mixed": 1},
        {"text": CJK_EMOJI, "n": 2, "meta": {"url": "http://b", "tags": []}, "mixed": "two"},
        {"text": COMBINING, "n": 3, "meta": {"url": "http://c", "tags": ["y", "z"]}, "mixed": [3]},
        {"text": CRLF_TEXT, "n": 4, "meta": {"other": True}, "mixed": {"k": None}, "big": 2**70},
    ]
    _lines(folder / "unicode.jsonl", [_j(r) for r in good])
    cases.append(
        Case(
            "unicode.jsonl",
            "CJK, emoji, ZWJ sequences, combining marks, CRLF; mixed-type passthrough",
            4,
            4,
            texts=[r["text"] for r in good],
        )
    )

    _lines(
        folder / "malformed.jsonl",
        [
            _j({"text": "first good line"}),
            b'{"text": "unterminated string',
            b"[1, 2, 3]",
            b'"a bare string"',
            b"",  # blank line: no document
            b'{"text": "trailing comma",}',
            b"   ",  # whitespace-only line: no document
            _j({"text": "last good line"}),
        ],
    )
    cases.append(
        Case(
            "malformed.jsonl",
            "malformed JSON lines, non-object JSON, blank lines",
            6,
            2,
            reasons=["malformed JSON", "JSON array, not an object", "JSON string, not an object", "malformed JSON"],
            texts=["first good line", "last good line"],
        )
    )

    _lines(
        folder / "fields.jsonl",
        [
            _j({"body": "no text field"}),
            _j({"text": None}),
            _j({"text": 42}),
            _j({"text": ["a", "list"]}),
            _j({"text": {"a": "dict"}}),
            _j({"text": True}),
            _j({"text": ""}),
            _j({"text": " \n\t\r\n "}),
            _j({"text": "\u3000\u00a0"}),  # ideographic and no-break spaces only
            _j({"text": "NUL \x00 inside"}),
            b'{"text": "lone surrogate \\ud800 here"}',
            _j({"text": "the only good one"}),
        ],
    )
    cases.append(
        Case(
            "fields.jsonl",
            "missing, NULL, non-string, empty, whitespace-only, NUL, invalid Unicode text",
            12,
            1,
            reasons=[
                "no field 'text'",
                "is null",
                "is int",
                "is list",
                "is dict",
                "is bool",
                "empty or whitespace",
                "empty or whitespace",
                "empty or whitespace",
                "NUL",
                "lone surrogate",
            ],
            texts=["the only good one"],
        )
    )

    (folder / "bytes.jsonl").write_bytes(
        b"\xef\xbb\xbf"
        + _j({"text": "after a byte order mark"})
        + b"\n"
        + b'{"text": "caf\xe9 in latin-1"}\n'
        + b'{"text": "\xff\xfe garbage"}\r\n'
        + _j({"text": "good, CRLF line end"})
        + b"\r\n"
    )
    cases.append(
        Case(
            "bytes.jsonl",
            "non-UTF-8 bytes, BOM, CRLF JSON line ends",
            4,
            2,
            reasons=["not valid UTF-8", "not valid UTF-8"],
            texts=["after a byte order mark", "good, CRLF line end"],
        )
    )

    _lines(
        folder / "dup-ids.jsonl",
        [
            _j({"id": "a", "text": "one"}),
            _j({"id": "b", "text": "two"}),
            _j({"id": "a", "text": "three"}),
            _j({"id": None, "text": "four"}),
            _j({"text": "five, no id"}),
        ],
    )
    cases.append(
        Case(
            "dup-ids.jsonl",
            "duplicate and missing doc ids within a shard",
            5,
            2,
            reasons=["duplicate doc id 'a'", "'id' is missing or null", "'id' is missing or null"],
            texts=["one", "two"],
        )
    )

    _lines(folder / "dup-texts.jsonl", [_j({"text": "same words"})] * 3 + [_j({"text": "other words"})])
    cases.append(
        Case(
            "dup-texts.jsonl",
            "identical texts without ids stay distinct documents",
            4,
            4,
            texts=["same words"] * 3 + ["other words"],
        )
    )

    nested = pa.table(
        {
            "text": ["parquet row one", None, "parquet row three \U0001f600"],
            "meta": [{"u": "x", "tags": ["p", "q"], "deep": {"k": [1, 2]}}, None, {"u": None, "tags": [], "deep": {"k": []}}],
            "attrs": pa.array([[("a", 1)], [], [("b", 2), ("c", 3)]], pa.map_(pa.string(), pa.int64())),
            "when": pa.array([datetime.datetime(2020, 1, 1), None, datetime.datetime(2021, 6, 1)], pa.timestamp("us", tz="UTC")),
            "price": pa.array([decimal.Decimal("1.50"), None, decimal.Decimal("2.25")], pa.decimal128(5, 2)),
            "shard": ["clash", "with", "reserved"],
        }
    )
    pq.write_table(nested, folder / "nested.parquet")
    cases.append(
        Case(
            "nested.parquet",
            "parquet with extra nested, map, decimal, timestamp columns",
            3,
            2,
            reasons=["is null"],
            texts=["parquet row one", "parquet row three \U0001f600"],
        )
    )

    (folder / "empty.jsonl").write_bytes(b"")
    cases.append(Case("empty.jsonl", "an empty shard file (0 bytes)", 0, 0))
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), folder / "empty-rows.parquet")
    cases.append(Case("empty-rows.parquet", "a parquet shard with no rows", 0, 0))

    (folder / "paragraphs.txt").write_bytes(
        b"First line\r\nsecond line of the first paragraph\r\n\r\n"
        b"Caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80\r\n \t \r\n"
        b"bad \xff byte paragraph\r\n\r\n\r\n"
        b"old Mac line ends\rstill the same paragraph\r\rlast paragraph, no final line end"
    )
    cases.append(
        Case(
            "paragraphs.txt",
            ".txt with CRLF and CR line ends, a non-UTF-8 paragraph",
            5,
            4,
            reasons=["not valid UTF-8"],
            texts=[
                "First line\r\nsecond line of the first paragraph",
                "Caf\u00e9 \u65e5\u672c \U0001f600",
                "old Mac line ends\rstill the same paragraph",
                "last paragraph, no final line end",
            ],
        )
    )

    whole = gzip.compress(b"".join(_j({"text": f"document number {i} " * 20}) + b"\n" for i in range(200)), mtime=0)
    (folder / "truncated.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    cases.append(Case("truncated.jsonl.gz", "a .jsonl.gz cut off mid-stream", fails=r"truncated\.jsonl\.gz.*truncated"))

    (folder / "corrupt.parquet").write_bytes(b"PAR1 not really parquet PAR1")
    cases.append(Case("corrupt.parquet", "a file that is not what its name says", fails=r"corrupt\.parquet"))

    hostile = [
        'it\'s "quoted" name.jsonl',
        "a'); DROP TABLE raw_corpus;--.jsonl",
        "x..y spaced ..name.jsonl",
        "semi;colon $(echo) `tick`.jsonl",
        "\u00fcnic\u00f8de \u65e5\u672c.jsonl",
    ]
    for i, name in enumerate(hostile):
        _lines(folder / name, [_j({"text": f"hostile file name {i}: {name}"})])
        cases.append(
            Case(
                name, "a file name with quotes, spaces, '..', SQL or shell syntax", 1, 1, texts=[f"hostile file name {i}: {name}"]
            )
        )
    return cases
