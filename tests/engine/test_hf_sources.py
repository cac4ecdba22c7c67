"""Hugging Face datasets as sources: a `save_to_disk` folder, and `hf:NAME[:CONFIG[:SPLIT]]` from the local cache.

Each of the dataset's Arrow files is one shard; every column passes through to the lake and to the export.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.cli import main
from tledit_pipeline.lake import read_partition
from tledit_pipeline.source import SourceError, discover_shards, read_shard

datasets = pytest.importorskip("datasets")

TEXTS = [
    "When shall we three meet again? In thunder, lightning, or in rain?",
    "Fair is foul, and foul is fair. Hover through the fog and filthy air.",
    "Caf\u00e9 \u65e5\u672c\u8a9e \U0001f600 e\u0301 done.\r\nNext line.",
    "Is this a dagger which I see before me?",
]


def _dataset() -> "datasets.Dataset":
    features = datasets.Features(
        {
            "id": datasets.Value("int64"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["verse", "prose"]),
            "meta": {"act": datasets.Value("string"), "line": datasets.Value("int32")},
            "tags": datasets.Sequence(datasets.Value("string")),
            "score": datasets.Value("float32"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "id": [10, 11, 12, 13],
            "text": TEXTS,
            "label": [0, 1, 1, 0],
            "meta": [{"act": "I", "line": 1}, {"act": "I", "line": 2}, {"act": None, "line": None}, {"act": "II", "line": 33}],
            "tags": [["witch"], [], ["unicode", "crlf"], ["dagger"]],
            "score": [0.5, 1.25, -2.0, 3.0],
        },
        features=features,
    )


def test_save_to_disk_folder_is_one_shard_per_arrow_file(tmp_path):
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": _dataset(), "test": _dataset().select([3])}).save_to_disk(
        str(saved), num_shards={"train": 2, "test": 1}
    )
    shards = discover_shards(str(saved), tmp_path)
    assert [s.key for s in shards] == ["test-data-00000-of-00001", "train-data-00000-of-00002", "train-data-00001-of-00002"]
    reads = {s.key: read_shard(s) for s in shards}
    train = pa.concat_tables([reads[k].accepted for k in ("train-data-00000-of-00002", "train-data-00001-of-00002")])
    assert train.column("text").to_pylist() == TEXTS and train.column("doc_id").to_pylist() == ["10", "11", "12", "13"]
    # Every column, with its Arrow type, in the file's order.
    arrow = _dataset().data.table
    for name in ("id", "label", "meta", "tags", "score"):
        assert train.column(name).type == arrow.column(name).type
    assert train.column("meta").to_pylist()[2] == {"act": None, "line": None}
    assert list(reads["test-data-00000-of-00001"].columns) == ["id", "text", "label", "meta", "tags", "score"]
    assert all(r.rejected.num_rows == 0 and len(r.digest) == 16 for r in reads.values())


@pytest.mark.slow
def test_run_and_export_from_a_saved_dataset(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    saved = tmp_path / "saved"
    _dataset().save_to_disk(str(saved), num_shards=2)
    home, out = tmp_path / "home", tmp_path / "export"
    assert main(["run", "--home", str(home), "--source", str(saved), "--model", str(tiny_model_dir)]) == 0
    assert "4 accepted, 0 rejected" in capsys.readouterr().out
    assert main(["export", "--home", str(home), "--source", str(saved), "--out", str(out), "--format", "parquet"]) == 0
    exported = pa.concat_tables([pq.read_table(out / f"data-0000{i}-of-00002.parquet") for i in range(2)])
    assert exported.column_names == ["id", "text", "label", "meta", "tags", "score"]
    source = _dataset().data.table
    for name in ("id", "label", "meta", "tags", "score"):
        assert exported.column(name).to_pylist() == source.column(name).to_pylist()
    assert read_partition(home, "raw_corpus", "data-00000-of-00002").num_rows == 2


def _cache_dataset(cache: str) -> None:
    """What `load_dataset("tledit/tiny_corpus")` leaves in HF_DATASETS_CACHE on a machine with network:
    the prepared Arrow files under tledit___tiny_corpus/default/0.0.0/<revision>/. Built here offline by the
    same builder code from a local parquet file."""
    from datasets.data_files import DataFilesDict
    from datasets.packaged_modules.parquet.parquet import Parquet, ParquetConfig

    parquet = os.path.join(cache, "train.parquet")
    pq.write_table(_dataset().data.table, parquet)

    class Hub(Parquet):
        BUILDER_CONFIGS = [ParquetConfig(name="default", data_files=DataFilesDict.from_patterns({"train": [parquet]}))]

    Hub(cache_dir=cache, dataset_name="tiny_corpus", config_name="default", hash="0123abcd").download_and_prepare()
    os.rename(os.path.join(cache, "tiny_corpus"), os.path.join(cache, "tledit___tiny_corpus"))  # the repo's namespace
    os.remove(parquet)


@pytest.mark.slow
def test_dataset_from_the_local_hf_cache_runs_offline(tmp_path, tiny_model_dir, monkeypatch, capsys):
    cache = tmp_path / "hf-datasets"
    cache.mkdir()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    _cache_dataset(str(cache))
    for source in ("hf:tledit/tiny_corpus", "hf:tledit/tiny_corpus:default", "hf:tledit/tiny_corpus:default:train"):
        shards = discover_shards(source, tmp_path)
        assert [s.key for s in shards] == ["tiny_corpus-train"], source
    read = read_shard(shards[0])
    assert read.accepted.column("text").to_pylist() == TEXTS
    assert read.accepted.column("tags").to_pylist() == [["witch"], [], ["unicode", "crlf"], ["dagger"]]
    with pytest.raises(SourceError, match="not in the local Hugging Face cache"):
        discover_shards("hf:tledit/not_downloaded", tmp_path)
    with pytest.raises(SourceError, match="expected hf:NAME"):
        discover_shards("hf:", tmp_path)

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    home = tmp_path / "home"
    assert main(["run", "--home", str(home), "--source", "hf:tledit/tiny_corpus", "--model", str(tiny_model_dir)]) == 0
    assert "4 accepted, 0 rejected" in capsys.readouterr().out
    edited = read_partition(home, "edited_corpus", "tiny_corpus-train")
    assert edited.column("doc_id").to_pylist() == ["10", "11", "12", "13"]
