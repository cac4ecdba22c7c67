"""The prior's vocabulary as text, stored once per prior so the edit step never needs the model."""

from __future__ import annotations

from functools import lru_cache

from tledit_pipeline.lake import partition_file, read_file_table, write_partition
from tledit_pipeline.prior import Prior
from tledit_pipeline.storage import Location

VOCAB_ASSET = "prior_vocab"


def vocab_path(home: Location, fingerprint: str) -> Location:
    return partition_file(home, VOCAB_ASSET, fingerprint)


def write_vocab(home: Location, prior: Prior) -> Location:
    """Once per prior fingerprint; later shards reuse the file."""
    path = vocab_path(home, prior.fingerprint)
    if not path.exists():
        write_partition(home, VOCAB_ASSET, prior.fingerprint, prior.vocab_table())
    return path


def read_vocab(home: Location, fingerprint: str) -> list:
    """token_id -> text (None where a token may not be a replacement)."""
    path = vocab_path(home, fingerprint)
    if not path.exists():
        raise FileNotFoundError(f"prior vocabulary {path} is missing; re-materialize token_scores")
    st = path.stat()
    return _read_vocab(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4)
def _read_vocab(path: Location, _mtime_ns: int, _size: int) -> list:
    """Read once per process (a backfill re-edits many shards against one vocabulary); callers must not mutate."""
    return read_file_table(path, columns=["text"]).column("text").to_pylist()
