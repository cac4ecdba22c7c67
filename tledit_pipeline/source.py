"""Where documents come from: shard discovery and reading a shard into accepted documents + rejects.

One source file = one shard = one partition. JSON lines (.jsonl, .jsonl.gz) are read line by line with
`json`, .txt as bytes (one document per blank-line separated paragraph, line ends kept), parquet with
pyarrow: every value reaches the lake as written. Every document ends up either accepted or in the
reject table with a reason and a locator: nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import hashlib
import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from tledit_pipeline.errors import TleditError
from tledit_pipeline.lake import file_digest as file_fingerprint  # a shard file's data version  # noqa: F401
from tledit_pipeline.sample import ensure_sample

# Longest suffix first, so `x.jsonl.gz` is not taken for `.gz`.
FORMATS = {".jsonl.gz": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}
_KEY_RE = re.compile(r"[^a-z0-9_-]+")
RESERVED = ("shard", "doc_id", "text")
MISSING = object()  # a JSON line without the text field, told apart from an explicit null
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark at the start of a file is not text

REJECT_SCHEMA = pa.schema(
    [("shard", pa.string()), ("source_file", pa.string()), ("locator", pa.string()), ("reason", pa.string())]
)


class SourceError(TleditError):
    """A source or shard file cannot be used at all; the message names it and the problem."""


@dataclass(frozen=True)
class Shard:
    key: str
    path: Path

    @property
    def format(self) -> str:
        return FORMATS[_suffix(self.path.name)]


def _suffix(name: str) -> str:
    for suffix in FORMATS:
        if name.lower().endswith(suffix):
            return suffix
    return ""


def _stem(filename: str) -> str:
    return filename[: len(filename) - len(_suffix(filename))] if _suffix(filename) else filename


def shard_key(filename: str) -> str:
    """A partition key from a file name: lowercase letters, digits, '-' and '_' only (no path tricks)."""
    key = _KEY_RE.sub("-", _stem(filename).lower()).strip("-_")
    return key[:80] or "shard"


def source_folder(source: str, home: Path) -> str:
    """`sample` means the bundled corpus, built under the data directory on first use."""
    if source == "sample":
        return str(ensure_sample(Path(home) / "sample"))
    return source


def discover_shards(source: str, home: Path) -> list[Shard]:
    """All shard files of a source (a folder, a glob, or one file), keyed by sanitized file name."""
    resolved = source_folder(source, home)
    p = Path(resolved).expanduser()
    if p.is_dir():
        files = [f for f in p.iterdir() if f.is_file() and _suffix(f.name) and not f.name.startswith(".")]
    elif p.is_file():
        if not _suffix(p.name):
            raise SourceError(f"source {source!r}: {p.name} is not a .jsonl, .jsonl.gz, .parquet or .txt file")
        files = [p]
    else:
        files = [Path(f) for f in glob.glob(resolved) if Path(f).is_file() and _suffix(Path(f).name)]
        if not files and not any(ch in resolved for ch in "*?["):
            raise SourceError(f"source {source!r} is not a folder, file or glob that exists")
    shards: dict[str, Shard] = {}
    for f in sorted(files, key=lambda f: f.name):
        key = shard_key(f.name)
        # A name that sanitizing changed gets a hash of the exact name, so a later file whose name
        # sanitizes to the same key never takes over an existing file's partition.
        if key != _stem(f.name) or key in shards:
            key = f"{key}-{hashlib.sha1(f.name.encode()).hexdigest()[:8]}"
        shards[key] = Shard(key=key, path=f.absolute())
    return sorted(shards.values(), key=lambda s: s.key)


def find_shard(source: str, home: Path, key: str) -> Shard:
    """The shard file behind a partition key, re-derived from the source (keys are never paths)."""
    for shard in discover_shards(source, home):
        if shard.key == key:
            return shard
    raise SourceError(f"shard {key!r} is not in source {source!r} (the file was removed or renamed?)")


@dataclass
class _Rows:
    """A file's rows before the text checks: one locator per row, and why a row could not even be parsed."""

    locators: list[str]
    unparsed: list[str | None]  # a reason where the row is not a usable record at all
    texts: list  # the text field's value per row (MISSING where the row has no such field)
    ids: list | None  # the source's `id` per row, or None when no row has one
    columns: Callable[[list[int]], list[tuple[str, pa.Array]]]  # passthrough columns of the given rows
    names: list[str] = dataclasses.field(default_factory=list)  # every source column, in the file's order


def _cannot_read(shard: Shard, problem: str) -> SourceError:
    return SourceError(f"shard {shard.key!r}: cannot read {shard.path.name}: {problem}")


def _lines(shard: Shard) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the line end) of a plain or gzip file, streamed.

    A gzip stream that ends early (a truncated download) or is corrupt raises SourceError: how many
    documents the missing part held is unknown, so the file fails as a whole rather than losing its tail.
    """
    gz = shard.path.name.lower().endswith(".gz")
    number = 0
    rest = b""
    with (gzip.open(shard.path, "rb") if gz else open(shard.path, "rb")) as fh:
        while True:
            try:
                block = fh.read(1 << 20)
            except EOFError:  # the compressed stream stops before its end marker
                raise _cannot_read(
                    shard, f"gzip stream ends early after line {number}: the file is truncated (re-create or re-download it)"
                ) from None
            except (OSError, zlib.error) as exc:
                raise _cannot_read(shard, f"corrupt gzip after line {number}: {exc}") from None
            if not block:
                break
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                number += 1
                yield number, line
    if rest:
        yield number + 1, rest


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (byte 0x{line[exc.start]:02x} at byte {exc.start + 1})") from None


def _json_rows(shard: Shard, text_field: str) -> _Rows:
    """JSON lines read line by line with `json`, so every value reaches the lake exactly as written."""
    locators, unparsed, records = [], [], []
    for number, line in _lines(shard):
        if number == 1 and line.startswith(BOM):
            line = line[len(BOM):]
        if not line.strip():
            continue  # a blank line holds no document
        locators.append(f"line {number}")
        record, reason = None, None
        try:
            record = json.loads(_decode(line))
        except json.JSONDecodeError as exc:
            reason = f"malformed JSON: {exc.msg} at column {exc.colno}"
        except ValueError as exc:  # not UTF-8
            reason = str(exc)
        except RecursionError:
            reason = "malformed JSON: nested too deeply"
        if reason is None and not isinstance(record, dict):
            reason = f"a JSON {_json_kind(record)}, not an object"
            record = None
        unparsed.append(reason)
        records.append(record)
    texts = [r.get(text_field, MISSING) if r is not None else MISSING for r in records]
    has_id = any(r is not None and "id" in r for r in records)
    ids = [r.get("id") if r is not None else None for r in records] if has_id else None

    def columns(keep: list[int]) -> list[tuple[str, pa.Array]]:
        names: dict[str, None] = {}
        for i in keep:
            names.update(dict.fromkeys(k for k in records[i] if k != text_field))
        return [(name, passthrough_array([records[i].get(name, MISSING) for i in keep])) for name in names]

    order = list(dict.fromkeys(k for r in records if r is not None for k in r))
    return _Rows(locators, unparsed, texts, ids, columns, order)


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _text_rows(shard: Shard, text_field: str) -> _Rows:
    """One document per blank-line separated paragraph; line ends inside a paragraph are kept as written."""
    try:
        data = shard.path.read_bytes()
    except OSError as exc:
        raise _cannot_read(shard, f"{type(exc).__name__}: {exc.strerror or exc}") from None
    if data.startswith(BOM):
        data = data[len(BOM):]
    locators, unparsed, texts = [], [], []
    para: list[bytes] = []
    first = 0
    for number, line in enumerate(data.splitlines(keepends=True) + [b""], 1):
        if line.strip():
            if not para:
                first = number
            para.append(line)
            continue
        if para:
            body = b"".join(para).rstrip(b"\r\n")  # the paragraph's last line end separates, it is not text
            locators.append(f"line {first}")
            try:
                texts.append(_decode(body))
                unparsed.append(None)
            except ValueError as exc:
                texts.append(MISSING)
                unparsed.append(str(exc))
            para = []

    def columns(keep: list[int]) -> list[tuple[str, pa.Array]]:
        return []

    return _Rows(locators, unparsed, texts, None, columns)


def _parquet_rows(shard: Shard, text_field: str) -> _Rows:
    """Parquet through pyarrow: every column type (maps, nested structs, decimals) passes through as stored."""
    try:
        table = pq.read_table(shard.path)
    except (OSError, pa.ArrowException) as exc:
        raise _cannot_read(shard, f"{type(exc).__name__}: {exc}") from None
    n = table.num_rows
    names = table.column_names
    texts = table.column(text_field).to_pylist() if text_field in names else [MISSING] * n
    ids = table.column("id").to_pylist() if "id" in names else None

    def columns(keep: list[int]) -> list[tuple[str, pa.Array]]:
        kept = table.take(pa.array(keep, pa.int64()))
        return [(c, kept.column(c).combine_chunks()) for c in names if c != text_field]

    return _Rows([f"row {i}" for i in range(1, n + 1)], [None] * n, texts, ids, columns, names)


def passthrough_array(values: list) -> pa.Array:
    """A typed column when Arrow holds every value exactly; otherwise the values as JSON (type `arrow.json`).

    Rows whose field types differ (1 and "two", dicts with other keys) cannot share an Arrow type without
    changing a value (Arrow would add null keys or cast); as JSON text they survive unchanged, and DuckDB
    reads the column as JSON. `passthrough_values` turns such a column back into the original values.
    An absent field reads as null.
    """
    present = [None if v is MISSING else v for v in values]
    try:
        arr = pa.array(present)
        if _same(arr.to_pylist(), present):
            return arr
    except (pa.ArrowException, OverflowError, TypeError, ValueError, UnicodeError):
        pass
    return pa.array([None if v is MISSING else _to_json(v) for v in values], pa.json_())


def _to_json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if _encodable(text) else json.dumps(value, separators=(",", ":"))  # lone surrogates escaped


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same JSON kind (True is not 1, {'a': 1} is not {'a': 1, 'b': None})."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return type(a) is type(b) and a == b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return False


def passthrough_values(column: pa.Array | pa.ChunkedArray) -> list:
    """A passthrough column's original values (JSON columns decoded)."""
    if isinstance(column.type, pa.JsonType):
        return [None if v is None else json.loads(v) for v in column.to_pylist()]
    return column.to_pylist()


@dataclass
class ShardRead:
    accepted: pa.Table  # shard, doc_id, text, then passthrough fields
    rejected: pa.Table  # REJECT_SCHEMA
    rows_in: int
    # The source's columns in file order, each with its name in `accepted` (the text field is `text`):
    # what `tledit export` needs to write the source's schema back.
    columns: dict[str, str] = dataclasses.field(default_factory=dict)


def doc_ids(texts: list[str], given: list | None) -> list[str]:
    """Stable ids: the source's own `id` field if it has one, else a content hash (so ids survive re-sharding)."""
    if given is not None:
        return [None if g is None else str(g) for g in given]
    seen: dict[str, int] = {}
    out = []
    for t in texts:
        h = hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        n = seen.get(h, 0)
        seen[h] = n + 1
        out.append(h if n == 0 else f"{h}~{n}")  # identical texts stay distinct documents
    return out


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _text_problem(t: Any, text_field: str) -> str | None:
    if t is MISSING:
        return f"no field {text_field!r}"
    if t is None:
        return f"field {text_field!r} is null"
    if not isinstance(t, str):
        return f"field {text_field!r} is {type(t).__name__}, not a string"
    if not t.strip():
        return f"field {text_field!r} is empty or whitespace only"
    if "\x00" in t:
        return f"field {text_field!r} contains NUL characters"
    if not _encodable(t):
        return f"field {text_field!r} is not valid Unicode (lone surrogate)"
    return None


def read_shard(shard: Shard, text_field: str = "text") -> ShardRead:
    """Every document of the file, accepted (with a stable doc_id) or rejected with a reason and locator.

    Locators are 1-based: "line N" for JSON lines and .txt (a paragraph's first line), "row N" for parquet.
    A file that cannot be read at all raises SourceError naming the shard, the file and the problem.
    """
    try:
        if shard.path.stat().st_size == 0:
            rows = _Rows([], [], [], None, lambda keep: [])
        elif shard.format == "json":
            rows = _json_rows(shard, text_field)
        elif shard.format == "text":
            rows = _text_rows(shard, text_field)
        else:
            rows = _parquet_rows(shard, text_field)
    except OSError as exc:  # missing, a folder, no permission
        raise _cannot_read(shard, f"{type(exc).__name__}: {exc.strerror or exc}") from None
    n = len(rows.locators)
    texts = rows.texts
    reasons = [rows.unparsed[i] or _text_problem(texts[i], text_field) for i in range(n)]
    safe_texts = [t if isinstance(t, str) and _encodable(t) else "" for t in texts]
    ids = doc_ids(safe_texts, rows.ids)
    seen: set[str] = set()
    for i, doc_id in enumerate(ids):
        if reasons[i]:
            continue
        if doc_id is None:
            reasons[i] = "field 'id' is missing or null"
        elif doc_id in seen:
            reasons[i] = f"duplicate doc id {doc_id!r} in this shard"
        else:
            seen.add(doc_id)
    keep = [i for i in range(n) if reasons[i] is None]
    accepted = pa.table(
        {
            "shard": pa.array([shard.key] * len(keep), pa.string()),
            "doc_id": pa.array([ids[i] for i in keep], pa.string()),
            "text": pa.array([texts[i] for i in keep], pa.string()),
        }
    )
    renamed = {text_field: "text"}
    for col, values in rows.columns(keep) if n else []:
        name = col
        while name in RESERVED or name in accepted.column_names:
            name = f"source_{name}"
        accepted = accepted.append_column(name, values)
        renamed[col] = name
    # The source's column order (what `tledit export` writes back); the text field where the file has it.
    order = [c for c in rows.names if c in renamed] if rows.names else []
    columns = {c: renamed[c] for c in order + [c for c in renamed if c not in order]}
    bad = [i for i in range(n) if reasons[i] is not None]
    rejected = pa.table(
        {
            "shard": [shard.key] * len(bad),
            "source_file": [shard.path.name] * len(bad),
            "locator": [rows.locators[i] for i in bad],
            "reason": [reasons[i] for i in bad],
        },
        schema=REJECT_SCHEMA,
    )
    return ShardRead(accepted=accepted, rejected=rejected, rows_in=n, columns=columns)
