"""The bundled sample corpus: deterministic shards of real text, long scenes and short fortunes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tledit_pipeline.sample import FORTUNES_PER_SHARD, MAX_FORTUNE_CHARS, SHARDS, ensure_sample


def _docs(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    return ensure_sample(tmp_path_factory.mktemp("sample") / "s")


def test_builds_at_least_four_shards(sample_dir):
    shards = sorted(sample_dir.glob("*.jsonl.gz"))
    assert len(shards) >= 4
    assert {p.name for p in shards} == {f"{name}.jsonl.gz" for name in SHARDS}
    assert not list(sample_dir.glob("*.tmp"))
    for p in shards:
        docs = _docs(p)
        assert docs, p.name
        assert all(isinstance(d["text"], str) and d["text"].strip() for d in docs)


def test_two_builds_are_byte_identical(sample_dir, tmp_path):
    other = ensure_sample(tmp_path / "other")
    names = sorted(p.name for p in sample_dir.iterdir())
    assert names == sorted(p.name for p in other.iterdir())
    for name in names:
        assert (sample_dir / name).read_bytes() == (other / name).read_bytes(), name


def test_ensure_sample_does_not_rewrite_existing_shards(tmp_path):
    folder = ensure_sample(tmp_path / "s")
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert ensure_sample(folder) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


def test_a_missing_shard_is_rebuilt(tmp_path):
    folder = ensure_sample(tmp_path / "s")
    first = sorted(folder.glob("*.jsonl.gz"))[0]
    data = first.read_bytes()
    first.unlink()
    ensure_sample(folder)
    assert first.read_bytes() == data


def test_macbeth_has_long_scenes(sample_dir):
    play = [d for p in sorted(sample_dir.glob("macbeth-*.jsonl.gz")) for d in _docs(p)]
    assert play
    assert all(d["work"] == "Macbeth" and d["source"] == "shakespeare" for d in play)
    assert all(d["text"].startswith("SCENE ") for d in play)
    assert max(len(d["text"]) for d in play) > 8000
    assert sum(len(d["text"]) > 8000 for d in play) >= 1
    acts = {d["act"] for d in play}
    assert acts == {"I", "II", "III", "IV", "V"}
    # Each (act, scene) appears once.
    keys = [(d["act"], d["scene"]) for d in play]
    assert len(keys) == len(set(keys))


def test_fortunes_are_short(sample_dir):
    for p in sorted(sample_dir.glob("fortunes-*.jsonl.gz")):
        docs = _docs(p)
        assert 0 < len(docs) <= FORTUNES_PER_SHARD
        assert all(d["source"] == "fortunes" for d in docs)
        assert all(len(d["text"]) <= MAX_FORTUNE_CHARS for d in docs)
        assert sum(len(d["text"]) for d in docs) / len(docs) < 300  # short documents on average
