"""Files shaped like public pre-training corpora: their file names, formats, compressions and fields.

C4 (`c4-train.00000-of-01024.json.gz`: text, timestamp, url), Dolma (`v1_7-0000.json.gz`: id, text, source,
added, created, metadata{...} whose keys differ by source), SlimPajama (`*.jsonl.zst`: text,
meta{redpajama_set_name}), the Pile (`*.jsonl.zst`: text, meta{pile_set_name}), FineWeb (`*.parquet`: text,
id, dump, url, date, file_path, language, language_score, token_count) and a Hugging Face repository's `.json`
JSON lines. The texts are real (fortune files of the bundled sample), ten per file.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from tledit_pipeline.sample import fortunes

PER_FILE = 10


def texts(n: int, skip: int = 0) -> list[str]:
    """n distinct real texts (fortunes of a modest length)."""
    pool = [d["text"] for d in fortunes(("fortunes",)) if 80 <= len(d["text"]) <= 400]
    return list(dict.fromkeys(pool))[skip : skip + n]


def json_lines(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def compress(data: bytes, suffix: str) -> bytes:
    if suffix.endswith(".gz"):
        return gzip.compress(data, mtime=0)
    if suffix.endswith(".zst"):
        return zstandard.ZstdCompressor(level=3).compress(data)
    if suffix.endswith(".bz2"):
        return bz2.compress(data)
    if suffix.endswith(".xz"):
        return lzma.compress(data, format=lzma.FORMAT_XZ)
    return data


def c4(i: int = 0) -> list[dict]:
    return [
        {"text": t, "timestamp": f"2019-04-{10 + j:02d}T0{j % 10}:13:44Z", "url": f"https://example.org/c4/{i}/{j}"}
        for j, t in enumerate(texts(PER_FILE, skip=i * PER_FILE))
    ]


def dolma(i: int = 1) -> list[dict]:
    rows = []
    for j, t in enumerate(texts(PER_FILE, skip=i * PER_FILE)):
        web = j % 2 == 0  # Dolma's metadata differs by source: a web page's and a book's hold other keys
        metadata = (
            {"url": f"https://example.org/d/{j}", "warc_date": "2020-01-01", "lang": {"en": 0.98}}
            if web
            else {"length": len(t), "bff_duplicate_paragraph_spans": [[0, 12]], "title": None}
        )
        rows.append(
            {
                "id": f"{'cc' if web else 'gb'}-{i:04d}-{j:05d}",
                "text": t,
                "source": "common-crawl" if web else "gutenberg",
                "added": "2023-08-23T17:09:23.118Z",
                "created": "2019-10-21T00:00:00.000Z",
                "metadata": metadata,
            }
        )
    return rows


def slimpajama(i: int = 2) -> list[dict]:
    sets = ["RedPajamaCommonCrawl", "RedPajamaC4", "RedPajamaWikipedia", "RedPajamaBook"]
    return [{"text": t, "meta": {"redpajama_set_name": sets[j % 4]}} for j, t in enumerate(texts(PER_FILE, skip=i * PER_FILE))]


def pile(i: int = 3) -> list[dict]:
    sets = ["Pile-CC", "PubMed Abstracts", "Books3", "Wikipedia (en)"]
    return [{"text": t, "meta": {"pile_set_name": sets[j % 4]}} for j, t in enumerate(texts(PER_FILE, skip=i * PER_FILE))]


def fineweb(i: int = 4) -> list[dict]:
    return [
        {
            "text": t,
            "id": f"<urn:uuid:{i:08x}-0000-4000-8000-{j:012x}>",
            "dump": "CC-MAIN-2013-20",
            "url": f"http://example.com/fw/{j}",
            "date": "2013-05-18T05:48:54Z",
            "file_path": "s3://commoncrawl/crawl-data/CC-MAIN-2013-20/segments/x.warc.gz",
            "language": "en",
            "language_score": 0.9 + j / 1000,
            "token_count": len(t.split()),
        }
        for j, t in enumerate(texts(PER_FILE, skip=i * PER_FILE))
    ]


def hf_json(i: int = 5) -> list[dict]:
    return [{"text": t, "label": j % 3, "split": "train"} for j, t in enumerate(texts(PER_FILE, skip=i * PER_FILE))]


def write(path: Path, rows: list[dict]) -> Path:
    """One file in the format and compression its name says (JSON lines, or parquet)."""
    if path.name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path, compression="snappy")
    else:
        path.write_bytes(compress(json_lines(rows), path.name))
    return path


def shapes() -> list[tuple[str, list[dict]]]:
    """A file of each public corpus's shape, named as that corpus names its files: (name, rows)."""
    return [
        ("c4-train.00000-of-01024.json.gz", c4()),
        ("v1_7-0000.json.gz", dolma()),
        ("example_train_0.jsonl.zst", slimpajama()),
        ("00.jsonl.zst", pile()),
        ("000_00000.parquet", fineweb()),
        ("000_00001.snappy.parquet", fineweb(6)),
        ("train.json", hf_json()),
        ("c4-train.00001-of-01024.json.bz2", c4(7)),
        ("v1_7-0001.json.xz", dolma(8)),
    ]


def mixed_folder(folder: Path) -> dict[str, list[dict]]:
    """The issue's mixed folder: six files shaped like C4, Dolma, SlimPajama, the Pile, FineWeb and a `.json`
    JSON-lines file, ten documents each; returns {file name: rows in file order}."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "c4-train.00000-of-01024.json.gz": c4(),
        "v1_7-0000.json.gz": dolma(),
        "example_train_0.jsonl.zst": slimpajama(),
        "00.jsonl.zst": pile(),
        "000_00000.parquet": fineweb(),
        "train.json": hf_json(),
    }
    for name, rows in files.items():
        write(folder / name, rows)
    return files
