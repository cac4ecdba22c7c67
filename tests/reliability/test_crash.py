"""Crashes: a real `tledit run` killed (SIGKILL) while writing a partition leaves no partial partition
visible, and re-running gives the same bytes as a run that was never interrupted."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from assets.cli import main
from tests.reliability.hold_writer import start_held
from tledit_pipeline.database import connect
from tledit_pipeline.lake import DATA_FILE, lake_root

REPO = Path(__file__).resolve().parents[2]
HELD = "edited_corpus:beta"  # the partition being written when the run is killed


def _lake_files(home: Path) -> dict[str, bytes]:
    root = lake_root(home)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run_in_process(home: Path, source: Path, model: Path, monkeypatch) -> int:
    monkeypatch.setenv("DAGSTER_HOME", str(home / "unused"))  # cmd_run points it at <home>; restored after
    return main(["run", "--home", str(home), "--source", str(source), "--model", str(model), "--threshold", "0.2"])


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_mid_write_leaves_no_partial_partition(tmp_path, small_source, tiny_model_dir, monkeypatch, capsys):
    crashed = tmp_path / "crashed"
    args = ["run", "--home", str(crashed), "--source", str(small_source), "--model", str(tiny_model_dir), "--threshold", "0.2"]
    proc = start_held(HELD, args, lake_root(crashed))  # the writer holds its temporary file
    asset, shard = HELD.split(":")
    folder = lake_root(crashed) / asset / f"shard={shard}"
    try:
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    # Only the temporary (hidden) file exists for the partition being written; it was never renamed.
    leftovers = [f.name for f in folder.iterdir()]
    assert DATA_FILE not in leftovers and len(leftovers) == 1 and leftovers[0].startswith(".")
    # Every partition that is visible is whole: its footer parses and all rows read.
    visible = sorted(lake_root(crashed).rglob(DATA_FILE))
    assert {p.parent.parent.name for p in visible} >= {"raw_corpus", "token_scores", "edited_corpus"}
    for p in visible:
        assert pq.read_table(p).num_rows == pq.read_metadata(p).num_rows
    assert not (lake_root(crashed) / "edited_corpus" / "shard=beta" / DATA_FILE).exists()

    # Re-run in the crashed home, and run once, uninterrupted, in a fresh home.
    assert _run_in_process(crashed, small_source, tiny_model_dir, monkeypatch) == 0
    clean = tmp_path / "clean"
    assert _run_in_process(clean, small_source, tiny_model_dir, monkeypatch) == 0
    capsys.readouterr()
    after, reference = _lake_files(crashed), _lake_files(clean)
    assert not [name for name in after if name.endswith(".tmp")]  # the killed writer's file was cleaned up
    assert after.keys() == reference.keys()
    assert [name for name in after if after[name] != reference[name]] == []
    assert len(after) >= 10

    def health(home):
        con = connect(home)
        return con.execute("SELECT variant, shard, metric, value FROM distribution_health ORDER BY ALL").fetchall()

    assert health(crashed) == health(clean)


def test_concurrent_writers_and_readers_only_ever_see_whole_partitions(tmp_path):
    """Parallel runs of one partition: readers see the old or a new table, never a mix or a half file."""
    import threading

    import pyarrow as pa

    from tledit_pipeline.lake import read_partition, write_partition

    tables = [pa.table({"doc_id": [f"w{w}-{i}" for i in range(2000)], "text": [f"writer {w} " * 20] * 2000}) for w in range(4)]
    write_partition(tmp_path, "raw_corpus", "a", tables[0])
    errors: list[BaseException] = []
    seen: set[str] = set()
    stop = threading.Event()

    def write(w):
        try:
            for _ in range(5):
                write_partition(tmp_path, "raw_corpus", "a", tables[w])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def read():
        try:
            while not stop.is_set():
                got = read_partition(tmp_path, "raw_corpus", "a")
                match = [w for w, t in enumerate(tables) if got.equals(t)]
                assert len(match) == 1
                seen.add(str(match[0]))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert seen
    assert [f.name for f in (tmp_path / "lake" / "raw_corpus" / "shard=a").iterdir()] == [DATA_FILE]
