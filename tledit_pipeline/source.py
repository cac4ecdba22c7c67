"""Where documents come from: shard discovery and reading a shard into accepted documents + rejects.

One source file = one shard = one partition. Files are read with Hugging Face `datasets` (json for
.jsonl / .jsonl.gz, parquet, text for .txt with one document per blank-line separated paragraph).
Every row ends up either accepted or in the reject table with a reason: nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from tledit_pipeline.errors import TleditError
from tledit_pipeline.lake import file_digest as file_fingerprint  # a shard file's data version  # noqa: F401
from tledit_pipeline.sample import ensure_sample

# Longest suffix first, so `x.jsonl.gz` is not taken for `.gz`.
FORMATS = {".jsonl.gz": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}
_KEY_RE = re.compile(r"[^a-z0-9_-]+")
RESERVED = ("shard", "doc_id", "text")
MISSING = object()  # a JSON line without the text field, told apart from an explicit null

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


def load_table(shard: Shard) -> pa.Table:
    """The file's rows as an Arrow table, read by `datasets` into memory (no cache left behind)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    kwargs = {"sample_by": "paragraph"} if shard.format == "text" else {}
    if shard.path.stat().st_size == 0:
        return pa.table({})
    try:
        with tempfile.TemporaryDirectory(prefix="tledit-ds-") as cache:
            ds = datasets.load_dataset(
                shard.format,
                data_files=[str(shard.path)],
                split="train",
                cache_dir=cache,
                keep_in_memory=True,
                **kwargs,
            )
            table = ds.data.table
            return pa.concat_tables([table]).combine_chunks() if table.num_rows else table
    except Exception as exc:  # datasets raises many types; the user needs the file and the cause
        cause = exc.__cause__ or exc
        # `from None`: this message already carries the cause and is what the user should see first.
        raise SourceError(
            f"shard {shard.key!r}: cannot read {shard.path.name}: {type(cause).__name__}: {cause}"
        ) from None


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


def _json_field(shard: Shard, field: str, rows: int) -> list:
    """One field of every JSON line, in the row order `datasets` uses (blank lines skipped)."""
    import gzip
    import json

    opener = gzip.open if shard.path.name.lower().endswith(".gz") else open
    values = []
    with opener(shard.path, "rt", encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise SourceError(
                        f"shard {shard.key!r}: {shard.path.name} line {number} is a JSON {type(record).__name__}, not an object"
                    )
                values.append(record.get(field, MISSING))
    if len(values) != rows:
        raise SourceError(
            f"shard {shard.key!r}: {shard.path.name} has {len(values)} JSON lines but {rows} rows were read"
        )
    return values


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def read_shard(shard: Shard, text_field: str = "text") -> ShardRead:
    """Every row of the file, accepted (with a stable doc_id) or rejected with a reason and its row number."""
    table = load_table(shard)
    n = table.num_rows
    reasons: list[str | None] = [None] * n
    if n and text_field not in table.column_names:
        reasons = [f"no field {text_field!r}"] * n
        texts: list = [None] * n
    elif shard.format == "json":
        # `datasets` JSON-encodes a column whose rows mix types ("hello" -> '"hello"'); the text is taken
        # from each line's own JSON value instead, so it is never altered and a non-string is caught.
        texts = _json_field(shard, text_field, n)
    else:
        texts = table.column(text_field).to_pylist() if n else []
    for i, t in enumerate(texts):
        if reasons[i]:
            continue
        if t is MISSING:
            reasons[i] = f"no field {text_field!r}"
        elif t is None:
            reasons[i] = f"field {text_field!r} is null"
        elif not isinstance(t, str):
            reasons[i] = f"field {text_field!r} is {type(t).__name__}, not a string"
        elif not t.strip():
            reasons[i] = f"field {text_field!r} is empty or whitespace only"
        elif "\x00" in t:
            reasons[i] = f"field {text_field!r} contains NUL characters"
        elif not _encodable(t):
            reasons[i] = f"field {text_field!r} is not valid Unicode (lone surrogate)"
    given = table.column("id").to_pylist() if "id" in table.column_names else None
    safe_texts = [t if isinstance(t, str) else "" for t in texts]
    ids = doc_ids(safe_texts, given)
    seen: set[str] = set()
    for i, doc_id in enumerate(ids):
        if reasons[i]:
            continue
        if doc_id is None:
            reasons[i] = "field 'id' is null"
        elif doc_id in seen:
            reasons[i] = f"duplicate doc id {doc_id!r} in this shard"
        else:
            seen.add(doc_id)
    keep = [i for i in range(n) if reasons[i] is None]
    passthrough = [c for c in table.column_names if c != text_field]
    accepted = pa.table(
        {
            "shard": pa.array([shard.key] * len(keep), pa.string()),
            "doc_id": pa.array([ids[i] for i in keep], pa.string()),
            "text": pa.array([texts[i] for i in keep], pa.string()),
        }
    )
    kept_rows = table.take(pa.array(keep, pa.int64())) if n else table
    renamed = {text_field: "text"}
    for col in passthrough:
        name = col
        while name in RESERVED or name in accepted.column_names:
            name = f"source_{name}"
        accepted = accepted.append_column(name, kept_rows.column(col))
        renamed[col] = name
    columns = {c: renamed[c] for c in table.column_names} if text_field in table.column_names else renamed
    bad = [i for i in range(n) if reasons[i] is not None]
    rejected = pa.table(
        {
            "shard": [shard.key] * len(bad),
            "source_file": [shard.path.name] * len(bad),
            "locator": [f"row {i + 1}" for i in bad],
            "reason": [reasons[i] for i in bad],
        },
        schema=REJECT_SCHEMA,
    )
    return ShardRead(accepted=accepted, rejected=rejected, rows_in=n, columns=columns)
