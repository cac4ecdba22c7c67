"""Where documents come from: shard discovery and reading a shard into accepted documents + rejects.

One source file = one shard = one partition. JSON lines (.jsonl or .json, plain or compressed: .gz, .zst,
.bz2, .xz) are read line by line with `json`; a .json file whose first character is `[` is one JSON array,
read whole, its items the records. .txt is read as bytes (one document per blank-line separated
paragraph, line ends kept), parquet (.parquet, .snappy.parquet) and Arrow (.arrow, the files of a Hugging
Face dataset) with pyarrow: every value reaches the lake as written. Every document ends up either accepted
or in the reject table with a reason and a locator; every file of a source folder or glob is either a shard
or listed as not taken, with the reason (`Discovery.not_taken`): nothing is dropped silently.

A source is a local folder, glob or file; the same on an object store (`s3://bucket/prefix/*.jsonl.gz`,
`gs://`, `az://`, `hf://datasets/...`, anything fsspec reaches); a folder written by a Hugging Face
dataset's `save_to_disk`; or `hf:NAME[:CONFIG[:SPLIT]]`, a dataset already in the local Hugging Face cache.
A store's object is fetched once to a local temporary file and hashed on the way: the shard's data version
is the hash of exactly the bytes that were read (never an ETag).
"""

from __future__ import annotations

import bz2
import dataclasses
import glob
import gzip
import hashlib
import itertools
import json
import lzma
import math
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tledit_pipeline import storage
from tledit_pipeline.errors import TleditError
from tledit_pipeline.lake import file_digest as file_fingerprint  # a shard file's data version  # noqa: F401
from tledit_pipeline.lake import lake_root, write_file_atomically
from tledit_pipeline.sample import ensure_sample
from tledit_pipeline.storage import Location, RemotePath, StorageError

# The compressions a JSON-lines file may carry, by suffix (named as fsspec.utils.infer_compression names them).
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2", ".xz": "xz"}
_READ = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text", ".arrow": "arrow"}
_READ |= {base + ext: "json" for base in (".jsonl", ".json") for ext in COMPRESSIONS}
# Suffix -> reader, longest suffix first (so `x.jsonl.gz` is matched whole). `.snappy.parquet` is a `.parquet`.
FORMATS = dict(sorted(_READ.items(), key=lambda item: -len(item[0])))
FORMATS_READ = ".jsonl, .json (each plain, .gz, .zst, .bz2 or .xz), .parquet, .txt or .arrow"
# The suffixes read before .json and .zst/.bz2/.xz were: where files share a stem (a.jsonl, a.json.gz),
# these claim the plain key first, so adding a file of another format never takes an existing shard's key.
PRIMARY_SUFFIXES = (".jsonl.gz", ".jsonl", ".parquet", ".txt", ".arrow")
# Not corpus files, so neither shards nor listed as not taken: a Hugging Face `save_to_disk` folder's
# (and a dataset repository's) metadata; hidden files (.DS_Store, .gitattributes) are skipped the same way.
METADATA_FILES = frozenset({"dataset_info.json", "dataset_infos.json", "state.json", "dataset_dict.json"})
HF_PREFIX = "hf:"  # hf:NAME[:CONFIG[:SPLIT]], a dataset in the local Hugging Face cache (hf://... is a URL)
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
    path: Location  # a local Path, or a RemotePath (its str() is the object's URL)

    @property
    def format(self) -> str:
        return FORMATS[format_suffix(self.path.name)]

    @property
    def suffix(self) -> str:
        """The file's format suffix, lowercased (`.json.gz`, `.parquet`); `tledit export` writes it back."""
        return format_suffix(self.path.name)

    @property
    def compression(self) -> str | None:
        """gzip, zstd, bz2 or xz for compressed JSON lines (from the suffix), else None."""
        return COMPRESSIONS.get("." + self.suffix.rsplit(".", 1)[-1])


@dataclass(frozen=True)
class NotTaken:
    """A file of the source that is not a shard, with why: listed in the run's summary, never skipped silently."""

    name: str
    location: str  # its path or URL
    reason: str


@dataclass(frozen=True)
class Discovery:
    shards: list[Shard]
    not_taken: list[NotTaken]


def format_suffix(name: str) -> str:
    """The format suffix a file name ends with, lowercased (`.json.gz`), or "" for a file tledit does not read."""
    for suffix in FORMATS:
        if name.lower().endswith(suffix):
            return suffix
    return ""


def _stem(filename: str) -> str:
    return filename[: len(filename) - len(format_suffix(filename))] if format_suffix(filename) else filename


def shard_key(filename: str) -> str:
    """A partition key from a file name: lowercase letters, digits, '-' and '_' only (no path tricks)."""
    key = _KEY_RE.sub("-", _stem(filename).lower()).strip("-_")
    return key[:80] or "shard"


def source_folder(source: str, home: Location) -> str:
    """`sample` means the bundled corpus, built on first use under the data directory (a local one) or
    beside the Dagster home (a data directory on an object store: storage.local_dir)."""
    if source == "sample":
        return str(ensure_sample(storage.local_dir(storage.location(home)) / "sample"))
    return source


def _not_a_shard(source: str, name: str) -> SourceError:
    return SourceError(f"source {source!r}: {name} is not a {FORMATS_READ} file")


def _why_not_taken(name: str) -> str:
    ext = "." + name.rsplit(".", 1)[1].lower() if "." in name.lstrip(".") else ""
    what = f"suffix {ext!r}" if ext else "no suffix"
    return f"not a corpus file ({what}; tledit reads {FORMATS_READ})"


def _is_metadata(name: str) -> bool:
    return name.startswith(".") or name in METADATA_FILES


def _local_files(source: str, resolved: str) -> list[tuple[str, Location]]:
    p = Path(resolved).expanduser()
    if p.is_dir():
        saved = _saved_dataset(p)
        if saved is not None:
            return saved
        return [(f.name, f.absolute()) for f in p.iterdir() if f.is_file()]
    if p.is_file():
        if not format_suffix(p.name):
            raise _not_a_shard(source, p.name)
        return [(p.name, p.absolute())]
    files = [Path(f) for f in glob.glob(resolved) if Path(f).is_file()]
    if not files and not any(ch in resolved for ch in storage.GLOB_CHARS):
        raise SourceError(f"source {source!r} is not a folder, file or glob that exists")
    return [(f.name, f.absolute()) for f in files]


def _remote_files(source: str, loc: RemotePath) -> list[tuple[str, Location]]:
    """Objects of a store: a prefix ("folder"), a glob, or one object. A missing or closed bucket is named."""
    if any(ch in loc.path for ch in storage.GLOB_CHARS):
        found: list[tuple[str, Location]] = [(f.name, f) for f, _ in storage.list_files(loc)]
        if not found:
            storage.check_bucket(loc)  # an empty match in a bucket that is not there (or not ours) says so
        return found
    try:
        kind = loc.info().get("type")
    except StorageError:
        storage.check_bucket(loc)
        raise SourceError(f"source {source!r} is not a folder, object or glob that exists") from None
    if kind == "file":
        if not format_suffix(loc.name):
            raise _not_a_shard(source, loc.name)
        return [(loc.name, loc)]
    saved = _saved_dataset(loc)
    if saved is not None:
        return saved
    return [(f.name, f) for f, _ in storage.list_files(loc)]


def _saved_dataset(folder: Location) -> list[tuple[str, Location]] | None:
    """The Arrow files of a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or None.

    A split's files are named `<split>-<file>` so the splits of a DatasetDict get distinct shard keys.
    """
    if (folder / "dataset_dict.json").exists():
        splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        return [(f"{split}-{name}", path) for split in splits for name, path in _saved_dataset(folder / split) or []]
    if not (folder / "state.json").exists():
        return None
    state = json.loads((folder / "state.json").read_text())
    return [(f["filename"], folder / f["filename"]) for f in state.get("_data_files", [])]


def _hf_cache_files(source: str) -> list[tuple[str, Location]]:
    """hf:NAME[:CONFIG[:SPLIT]]: the Arrow files of a dataset in the local Hugging Face cache.

    The `datasets` library resolves the name (its own cache layout, versions and configs), with the Hub
    switched off for the call: a cached dataset needs no network, and an uncached one is an error.
    """
    from unittest import mock

    parts = source[len(HF_PREFIX) :].split(":")
    if not parts[0] or len(parts) > 3:
        raise SourceError(f"source {source!r}: expected hf:NAME, hf:NAME:CONFIG or hf:NAME:CONFIG:SPLIT")
    name, config, split = (parts + [None, None])[:3]
    import datasets
    import huggingface_hub.constants

    try:
        with (
            mock.patch.object(datasets.config, "HF_HUB_OFFLINE", True),
            mock.patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", True),
        ):
            loaded = datasets.load_dataset(name, config or None, split=split or None)
    except Exception as exc:  # noqa: BLE001 (the library raises many kinds for "not cached"; all end here)
        detail = str(exc).splitlines()[0] if str(exc) else "not found"
        raise SourceError(
            f"source {source!r}: not in the local Hugging Face cache ({datasets.config.HF_DATASETS_CACHE}): {detail}"
        ) from None
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(split, loaded)]
    out: list[tuple[str, Location]] = []
    for split_name, ds in splits:
        for f in ds.cache_files:
            path = Path(f["filename"])
            label = path.name if not split_name or str(split_name) in path.name else f"{split_name}-{path.name}"
            out.append((label, path))
    if not out:
        raise SourceError(f"source {source!r}: the cached dataset has no Arrow files (an in-memory dataset?)")
    return out


def discover_shards(source: str, home: Location) -> list[Shard]:
    """All shard files of a source, keyed by sanitized file name (see the module docstring for sources)."""
    return discover_source(source, home).shards


def discover_source(source: str, home: Location) -> Discovery:
    """The source's shards, and its files that are not shards with the reason (hidden and metadata files aside).

    A folder is read one level deep (a glob such as `data/*/*.json.gz` reaches further).
    """
    resolved = source_folder(source, home)
    if resolved.startswith(HF_PREFIX) and not resolved.startswith("hf://"):
        files = _hf_cache_files(resolved)
    else:
        loc = storage.location(resolved) if storage.is_url(resolved) else None
        files = _remote_files(source, loc) if isinstance(loc, RemotePath) else _local_files(source, resolved)
    not_taken = [
        NotTaken(name, str(f), _why_not_taken(name)) for name, f in files if not format_suffix(name) and not _is_metadata(name)
    ]
    files = [(name, f) for name, f in files if format_suffix(name) and not _is_metadata(name)]
    shards: dict[str, Shard] = {}
    # Primary suffixes first, then by name: which file of a shared stem gets the plain key never depends on
    # files of a newer format appearing beside it.
    for name, f in sorted(files, key=lambda f: (format_suffix(f[0]) not in PRIMARY_SUFFIXES, f[0])):
        key = shard_key(name)
        # A name that sanitizing changed gets a hash of the exact name, so a later file whose name
        # sanitizes to the same key never takes over an existing file's partition.
        if key != _stem(name) or key in shards:
            key = f"{key}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
        shards[key] = Shard(key=key, path=f)
    return Discovery(sorted(shards.values(), key=lambda s: s.key), sorted(not_taken, key=lambda n: n.name))


REJECTED_FILES = "rejected_files"  # the lake table of the source's not-taken files: lake/rejected_files/data.parquet


def write_not_taken(home: Location, not_taken: Iterable[NotTaken]) -> Location:
    """Record the source's not-taken files (as last discovered) in the lake, atomically; an empty table when
    every file was taken, so a file that was removed or renamed into a shard leaves no stale row."""
    table = not_taken_table(not_taken)
    return write_file_atomically(lake_root(home) / REJECTED_FILES / "data.parquet", lambda p: pq.write_table(table, p))


def not_taken_table(not_taken: Iterable[NotTaken]) -> pa.Table:
    """The source's not-taken files as rejects of the source (REJECT_SCHEMA; no shard, the locator is the file)."""
    rows = list(not_taken)
    return pa.table(
        {
            "shard": pa.nulls(len(rows), pa.string()),
            "source_file": [n.name for n in rows],
            "locator": [n.location for n in rows],
            "reason": [n.reason for n in rows],
        },
        schema=REJECT_SCHEMA,
    )


def find_shard(source: str, home: Location, key: str) -> Shard:
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


_STREAM = {"gzip": "gzip", "zstd": "zstd", "bz2": "bzip2", "xz": "xz"}  # the names the errors use


def _blocks(shard: Shard, path: Path) -> Iterator[bytes]:
    """The file's bytes, decompressed as its suffix says (stdlib gzip, bz2 and lzma; zstandard), in blocks.

    A compressed stream that ends early raises EOFError, a corrupt one OSError, zlib/lzma or Zstd errors:
    `_lines` turns both into one SourceError naming the file.
    """
    if shard.compression == "zstd":
        yield from _zstd_blocks(path)
        return
    openers: dict[str | None, Callable[..., Any]] = {None: open, "gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}
    opener = openers[shard.compression]
    with opener(path, "rb") as fh:
        while block := fh.read(1 << 20):
            yield block


def _zstd_blocks(path: Path) -> Iterator[bytes]:
    """Zstandard frames, one after another. fsspec's zstd reader returns the part it has of a cut-off frame
    without a word, so the frame ends are checked here: a stream cut inside a frame raises EOFError."""
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    frame = decompressor.decompressobj()
    inside = False  # bytes of the current frame were fed and its end has not come
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            while chunk:
                inside = True
                if out := frame.decompress(chunk):
                    yield out
                if not frame.eof:
                    break
                chunk, frame, inside = frame.unused_data, decompressor.decompressobj(), False
    if inside:
        raise EOFError("zstd frame cut off")


def _lines(shard: Shard, blocks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the line end) of a plain or compressed file, streamed.

    A compressed stream that ends early (a truncated download) or is corrupt raises SourceError: how many
    documents the missing part held is unknown, so the file fails as a whole rather than losing its tail.
    """
    number = 0
    rest = b""
    for block in _checked(shard, blocks, lambda: f"after line {number}"):  # noqa: B023 (the count when it fails)
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        for line in lines:
            number += 1
            yield number, line
    if rest:
        yield number + 1, rest


def _checked(shard: Shard, blocks: Iterable[bytes], where: Callable[[], str]) -> Iterator[bytes]:
    """The blocks, with a broken compressed stream turned into one SourceError naming the file and where."""
    import zstandard

    kind = _STREAM.get(shard.compression or "", "file")
    it = iter(blocks)
    while True:
        try:
            block = next(it)
        except StopIteration:
            return
        except EOFError:  # the compressed stream stops before its end marker
            raise _cannot_read(
                shard, f"{kind} stream ends early {where()}: the file is truncated (re-create or re-download it)"
            ) from None
        except (OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as exc:
            raise _cannot_read(shard, f"corrupt {kind} {where()}: {exc}") from None
        yield block


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (byte 0x{line[exc.start]:02x} at byte {exc.start + 1})") from None


def _parse(data: bytes) -> tuple[Any, str | None]:
    """(the record, None), or (None, why this JSON text is not a usable record)."""
    try:
        record = json.loads(_decode(data))
    except json.JSONDecodeError as exc:
        return None, f"malformed JSON: {exc.msg} at column {exc.colno}"
    except ValueError as exc:  # not UTF-8
        return None, str(exc)
    except RecursionError:
        return None, "malformed JSON: nested too deeply"
    if not isinstance(record, dict):
        return None, f"a JSON {_json_kind(record)}, not an object"
    return record, None


def _json_lines(shard: Shard, blocks: Iterable[bytes]) -> Iterator[tuple[str, Any, str | None]]:
    for number, line in _lines(shard, blocks):
        if number == 1 and line.startswith(BOM):
            line = line[len(BOM) :]
        if line.strip():  # a blank line holds no document
            yield (f"line {number}", *_parse(line))


def _json_array(shard: Shard, data: bytes) -> Iterator[tuple[str, Any, str | None]]:
    """A .json file that is one JSON array: read whole, or not at all (a cut or malformed array fails the file)."""
    try:
        items = json.loads(_decode(data))
    except json.JSONDecodeError as exc:
        raise _cannot_read(
            shard, f"it starts with '[' (one JSON array) but is not one: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise _cannot_read(shard, f"it starts with '[' (one JSON array): {exc}") from None
    except RecursionError:
        raise _cannot_read(shard, "it starts with '[' (one JSON array): nested too deeply") from None
    if not isinstance(items, list):  # `[...]` followed by more JSON parses as an error above; this cannot happen
        raise _cannot_read(shard, "it starts with '[' but is not one JSON array")
    for i, item in enumerate(items, 1):
        if isinstance(item, dict):
            yield f"item {i}", item, None
        else:
            yield f"item {i}", None, f"a JSON {_json_kind(item)}, not an object"


def _json_records(shard: Shard, path: Path) -> Iterator[tuple[str, Any, str | None]]:
    """(locator, record or None, reason) per row: JSON lines, or the items of a .json file that is one JSON array."""
    blocks = _blocks(shard, path)
    if not shard.suffix.startswith(".json") or shard.suffix.startswith(".jsonl"):
        yield from _json_lines(shard, blocks)
        return
    head = b""
    for block in _checked(shard, blocks, lambda: "at its start"):  # enough of the start to see its first character
        head += block
        if head.removeprefix(BOM).strip():
            break
    if head.removeprefix(BOM).lstrip().startswith(b"["):
        rest = b"".join(_checked(shard, blocks, lambda: "inside its JSON array"))  # the blocks after the head
        yield from _json_array(shard, (head + rest).removeprefix(BOM))
    else:
        yield from _json_lines(shard, itertools.chain([head], blocks))


def _json_rows(shard: Shard, text_field: str, path: Path) -> _Rows:
    """JSON read with `json`, record by record, so every value reaches the lake exactly as written."""
    locators, unparsed, records = [], [], []
    for locator, record, reason in _json_records(shard, path):
        locators.append(locator)
        unparsed.append(reason)
        records.append(record)
    texts = [r.get(text_field, MISSING) if r is not None else MISSING for r in records]
    has_id = any(r is not None and "id" in r for r in records)
    ids = [r.get("id") if r is not None else None for r in records] if has_id else None

    def columns(keep: list[int]) -> list[tuple[str, pa.Array]]:
        names: dict[str, None] = {}
        kept = [r for i in keep if (r := records[i]) is not None]  # `keep` holds parsed rows only
        for r in kept:
            names.update(dict.fromkeys(k for k in r if k != text_field))
        return [(name, passthrough_array([r.get(name, MISSING) for r in kept])) for name in names]

    order = list(dict.fromkeys(k for r in records if r is not None for k in r))
    return _Rows(locators, unparsed, texts, ids, columns, order)


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _text_rows(shard: Shard, text_field: str, path: Path) -> _Rows:
    """One document per blank-line separated paragraph; line ends inside a paragraph are kept as written."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _cannot_read(shard, f"{type(exc).__name__}: {exc.strerror or exc}") from None
    if data.startswith(BOM):
        data = data[len(BOM) :]
    locators: list[str] = []
    unparsed: list[str | None] = []
    texts: list = []
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


def _parquet_rows(shard: Shard, text_field: str, path: Path) -> _Rows:
    """Parquet through pyarrow: every column type (maps, nested structs, decimals) passes through as stored."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise _cannot_read(shard, f"{type(exc).__name__}: {exc}") from None
    return _table_rows(table, text_field)


def _arrow_rows(shard: Shard, text_field: str, path: Path) -> _Rows:
    """Arrow IPC files (a Hugging Face dataset's: the stream format; the file format too), every column as stored."""
    try:
        with pa.OSFile(str(path)) as source:  # read into memory: the file may be a temporary copy
            try:
                table = pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:
                source.seek(0)
                table = pa.ipc.open_file(source).read_all()
    except (OSError, pa.ArrowException) as exc:
        raise _cannot_read(shard, f"not a readable Arrow file: {exc}") from None
    return _table_rows(table, text_field)


def _table_rows(table: pa.Table, text_field: str) -> _Rows:
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
    digest: str = ""  # content hash of exactly the bytes read (file_fingerprint's form): the shard's data version
    # The source's columns in file order, each with its name in `accepted` (the text field is `text`):
    # what `tledit export` needs to write the source's schema back.
    columns: dict[str, str] = dataclasses.field(default_factory=dict)


def doc_ids(texts: list[str], given: list | None) -> list[str | None]:
    """Stable ids: the source's own `id` field if it has one, else a content hash (so ids survive re-sharding)."""
    if given is not None:
        return [None if g is None else str(g) for g in given]
    seen: dict[str, int] = {}
    out: list[str | None] = []  # None: a missing source id, rejected by the caller
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
    A store's object is fetched to a local temporary file first (one streamed read, pinned to one version).
    """
    readers = {"json": _json_rows, "text": _text_rows, "parquet": _parquet_rows, "arrow": _arrow_rows}
    try:
        with storage.local_copy(shard.path) as (path, sha):
            digest = (sha or storage.sha256(path))[:16]
            if path.stat().st_size == 0:
                rows = _Rows([], [], [], None, lambda keep: [])
            else:
                rows = readers[shard.format](shard, text_field, path)
    except StorageError as exc:  # gone since it was listed, access denied, the store unreachable
        raise SourceError(f"shard {shard.key!r}: {exc}") from None
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
    return ShardRead(accepted=accepted, rejected=rejected, rows_in=n, columns=columns, digest=digest)
