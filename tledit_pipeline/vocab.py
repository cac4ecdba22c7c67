"""The prior's vocabulary as text, stored once per prior so the edit step never needs the model."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pyarrow.parquet as pq

from tledit_pipeline.lake import partition_file, write_partition
from tledit_pipeline.prior import Prior

VOCAB_ASSET = "prior_vocab"


def vocab_path(home: Path, fingerprint: str) -> Path:
    return partition_file(home, VOCAB_ASSET, fingerprint)


def write_vocab(home: Path, prior: Prior) -> Path:
    """Once per prior fingerprint; later shards reuse the file."""
    path = vocab_path(home, prior.fingerprint)
    if not path.exists():
        write_partition(home, VOCAB_ASSET, prior.fingerprint, prior.vocab_table())
    return path


def read_vocab(home: Path, fingerprint: str) -> list:
    """token_id -> text (None where a token may not be a replacement)."""
    path = vocab_path(home, fingerprint)
    if not path.exists():
        raise FileNotFoundError(f"prior vocabulary {path} is missing; re-materialize token_scores")
    st = path.stat()
    return _read_vocab(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4)
def _read_vocab(path: str, _mtime_ns: int, _size: int) -> list:
    """Read once per process (a backfill re-edits many shards against one vocabulary); callers must not mutate."""
    with pq.ParquetFile(path) as fh:
        return fh.read(columns=["text"]).column("text").to_pylist()
