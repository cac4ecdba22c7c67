"""Source discovery and shard reading: every row ends up accepted or rejected with a reason."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.public_corpora as corpora
from tledit_pipeline.source import (
    FORMATS_READ,
    REJECT_SCHEMA,
    Shard,
    SourceError,
    discover_shards,
    discover_source,
    doc_ids,
    file_fingerprint,
    find_shard,
    passthrough_values,
    read_shard,
    shard_key,
    write_not_taken,
)

KEY_RE = re.compile(r"^[a-z0-9_-]+$")


def _read(path: Path, text_field: str = "text"):
    return read_shard(Shard(key=shard_key(path.name), path=path), text_field)


def _check_accounting(r):
    assert r.accepted.num_rows + r.rejected.num_rows == r.rows_in
    assert r.rejected.schema == REJECT_SCHEMA
    assert r.accepted.column_names[:3] == ["shard", "doc_id", "text"]


# ---------------------------------------------------------------- shard keys


@pytest.mark.parametrize(
    "name, key",
    [
        ("alpha.jsonl", "alpha"),
        ("beta.jsonl.gz", "beta"),
        ("Beta.JSONL.GZ", "beta"),
        ("My Shard.parquet", "my-shard"),
        ('it\'s "quoted".txt', "it-s-quoted"),
        ("../../etc/passwd.jsonl", "etc-passwd"),
        ("a/b\\c.jsonl", "a-b-c"),
        ("..jsonl", "shard"),
        ("...", "shard"),
        ("UPPER_case-Name.jsonl", "upper_case-name"),
        ("data.v2.jsonl.gz", "data-v2"),
    ],
)
def test_shard_key_examples(name, key):
    assert shard_key(name) == key


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_shard_key_is_always_safe(name):
    for candidate in (name, name + ".jsonl", name + ".jsonl.gz", name + ".PARQUET", "../" + name + ".txt"):
        key = shard_key(candidate)
        assert KEY_RE.match(key), key
        assert "/" not in key and "\\" not in key and ".." not in key
        assert 1 <= len(key) <= 80


def test_double_extension_is_stripped_whole():
    assert shard_key("corpus.jsonl.gz") == shard_key("corpus.jsonl") == "corpus"
    assert "jsonl" not in shard_key("corpus.jsonl.gz")


# ---------------------------------------------------------------- discovery


def _mixed_folder(folder: Path) -> Path:
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [{"text": "first document"}])
    write_jsonl(folder / "b.jsonl.gz", [{"text": "second document"}], gz=True)
    pq.write_table(pa.table({"text": ["third document"]}), folder / "c.parquet")
    (folder / "d.txt").write_text("fourth document\n\nfifth document\n", encoding="utf-8")
    # Not shards:
    (folder / "notes.md").write_text("# readme")
    (folder / "data.json").write_text('{"text": "x"}')
    (folder / "archive.gz").write_bytes(gzip.compress(b"x"))
    write_jsonl(folder / ".hidden.jsonl", [{"text": "hidden"}])
    (folder / "sub").mkdir()
    write_jsonl(folder / "sub" / "nested.jsonl", [{"text": "nested"}])
    return folder


def test_discover_shards_of_a_folder(tmp_path):
    src = _mixed_folder(tmp_path / "src")
    shards = discover_shards(str(src), tmp_path / "home")
    assert [s.key for s in shards] == ["a", "b", "c", "d", "data"]
    assert [s.path.name for s in shards] == ["a.jsonl", "b.jsonl.gz", "c.parquet", "d.txt", "data.json"]
    assert [s.format for s in shards] == ["json", "json", "parquet", "text", "json"]
    # Every other file is listed with its reason; hidden files and subfolders are not part of the source.
    not_taken = discover_source(str(src), tmp_path / "home").not_taken
    assert [(n.name, n.reason.split(";")[0]) for n in not_taken] == [
        ("archive.gz", "not a corpus file (suffix '.gz'"),
        ("notes.md", "not a corpus file (suffix '.md'"),
    ]
    assert all(FORMATS_READ in n.reason and Path(n.location).is_absolute() for n in not_taken)
    assert all(s.path.is_absolute() for s in shards)
    assert find_shard(str(src), tmp_path / "home", "c").path.name == "c.parquet"
    with pytest.raises(SourceError, match="'zzz'"):
        find_shard(str(src), tmp_path / "home", "zzz")


def test_discover_single_file_and_glob(tmp_path):
    src = _mixed_folder(tmp_path / "src")
    one = discover_shards(str(src / "b.jsonl.gz"), tmp_path)
    assert [(s.key, s.path.name) for s in one] == [("b", "b.jsonl.gz")]
    globbed = discover_shards(str(src / "*.jsonl*"), tmp_path)
    assert [s.key for s in globbed] == ["a", "b"]


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="not a folder, file or glob"):
        discover_shards(str(tmp_path / "nope"), tmp_path)


def test_colliding_keys_stay_distinct(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "My Data.jsonl", [{"text": "one"}])
    write_jsonl(src / "my-data.jsonl", [{"text": "two"}])
    write_jsonl(src / "my_data.jsonl", [{"text": "three"}])
    shards = discover_shards(str(src), tmp_path)
    keys = [s.key for s in shards]
    assert len(keys) == len(set(keys)) == 3
    assert {s.path.name for s in shards} == {"My Data.jsonl", "my-data.jsonl", "my_data.jsonl"}
    assert all(KEY_RE.match(k) for k in keys)
    assert discover_shards(str(src), tmp_path) == shards  # stable


def test_discover_sample_source_builds_it(tmp_path):
    shards = discover_shards("sample", tmp_path)
    assert len(shards) >= 4
    assert all(s.path.parent == (tmp_path / "sample").absolute() for s in shards)


# ---------------------------------------------------------------- reading each format


def test_read_jsonl(small_source):
    r = _read(small_source / "alpha.jsonl")
    _check_accounting(r)
    assert r.rows_in == 3 and r.rejected.num_rows == 0
    assert r.accepted.column("shard").to_pylist() == ["alpha"] * 3
    assert r.accepted.column("n").to_pylist() == [1, 2, 3]
    assert r.accepted.column("text").to_pylist()[2] == "Caf\u00e9 \u65e5\u672c\u8a9e \U0001f600 e\u0301 done.\r\nNext line."


def test_read_jsonl_gz(small_source):
    r = _read(small_source / "beta.jsonl.gz")
    _check_accounting(r)
    assert r.rows_in == 2
    assert r.accepted.column("text").to_pylist() == [
        "The quick brown fox jumps over the lazy dog. " * 30,
        "Is this a dagger which I see before me?",
    ]
    assert r.accepted.column("lang").to_pylist() == ["en", "en"]


def test_read_parquet(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(
        pa.table({"text": ["one", None, "  ", "four"], "score": [0.5, 1.5, 2.5, 3.5], "shard": ["x", "y", "z", "w"]}),
        path,
    )
    r = _read(path)
    _check_accounting(r)
    assert r.rows_in == 4
    assert r.accepted.column("text").to_pylist() == ["one", "four"]
    assert r.accepted.column("score").to_pylist() == [0.5, 3.5]
    # A source column named like a reserved one is kept under a prefixed name, not clobbered.
    assert r.accepted.column("shard").to_pylist() == ["p", "p"]
    assert r.accepted.column("source_shard").to_pylist() == ["x", "w"]
    assert r.rejected.column("locator").to_pylist() == ["row 2", "row 3"]


def test_read_parquet_non_string_text_column(tmp_path):
    path = tmp_path / "nums.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), path)
    r = _read(path)
    _check_accounting(r)
    assert r.accepted.num_rows == 0
    assert r.rejected.column("reason").to_pylist() == ["field 'text' is int, not a string"] * 3


def test_read_txt_paragraphs(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("First paragraph\nstill first.\n\nSecond one.\n\n\n\nThird.\n", encoding="utf-8")
    r = _read(path)
    _check_accounting(r)
    texts = r.accepted.column("text").to_pylist()
    assert [t.strip() for t in texts] == ["First paragraph\nstill first.", "Second one.", "Third."]
    assert texts[0] == "First paragraph\nstill first."
    assert r.accepted.column_names == ["shard", "doc_id", "text"]


def test_empty_file_reads_as_no_rows(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    r = _read(path)
    _check_accounting(r)
    assert r.rows_in == 0 and r.accepted.num_rows == 0


# ---------------------------------------------------------------- rejects


def test_rejects_with_reasons(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"text": "good one", "k": 1},
            {"k": 2},  # no text field in this row
            {"text": None, "k": 3},
            {"text": "", "k": 4},
            {"text": " \n\t  ", "k": 5},
            {"text": "bad\x00nul", "k": 6},
            {"text": "good two", "k": 7},
        ],
    )
    r = _read(path)
    _check_accounting(r)
    assert r.rows_in == 7
    assert r.accepted.column("text").to_pylist() == ["good one", "good two"]
    assert r.accepted.column("k").to_pylist() == [1, 7]
    rej = r.rejected.to_pylist()
    assert [x["locator"] for x in rej] == ["line 2", "line 3", "line 4", "line 5", "line 6"]
    assert [x["reason"] for x in rej] == [
        "no field 'text'",
        "field 'text' is null",
        "field 'text' is empty or whitespace only",
        "field 'text' is empty or whitespace only",
        "field 'text' contains NUL characters",
    ]
    assert {x["source_file"] for x in rej} == {"mixed.jsonl"}
    assert {x["shard"] for x in rej} == {"mixed"}


def test_missing_text_field_everywhere(tmp_path):
    path = write_jsonl(tmp_path / "other.jsonl", [{"body": "a"}, {"body": "b"}])
    r = _read(path)
    _check_accounting(r)
    assert r.accepted.num_rows == 0
    assert r.rejected.column("reason").to_pylist() == ["no field 'text'"] * 2


def test_custom_text_field(tmp_path):
    path = write_jsonl(tmp_path / "body.jsonl", [{"body": "hello there", "text": "passthrough"}])
    r = _read(path, text_field="body")
    _check_accounting(r)
    assert r.accepted.column("text").to_pylist() == ["hello there"]
    assert r.accepted.column("source_text").to_pylist() == ["passthrough"]


def test_all_numeric_text_is_rejected(tmp_path):
    path = write_jsonl(tmp_path / "nums.jsonl", [{"text": 5}, {"text": 7}])
    r = _read(path)
    _check_accounting(r)
    assert r.accepted.num_rows == 0
    assert r.rejected.column("reason").to_pylist() == ["field 'text' is int, not a string"] * 2


def test_number_among_string_texts_is_rejected(tmp_path):
    path = write_jsonl(tmp_path / "mixed_types.jsonl", [{"text": "hello"}, {"text": 5}, {"text": "world"}])
    r = _read(path)
    _check_accounting(r)
    assert r.accepted.column("text").to_pylist() == ["hello", "world"]
    assert r.rejected.column("reason").to_pylist() == ["field 'text' is int, not a string"]


def test_duplicate_source_ids_rejected(tmp_path):
    path = write_jsonl(
        tmp_path / "ids.jsonl",
        [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}, {"id": "a", "text": "three"}, {"id": None, "text": "four"}],
    )
    r = _read(path)
    _check_accounting(r)
    assert r.accepted.column("doc_id").to_pylist() == ["a", "b"]
    assert r.accepted.column("text").to_pylist() == ["one", "two"]
    assert r.accepted.column("id").to_pylist() == ["a", "b"]  # the source id is also kept as passthrough
    reasons = dict(zip(r.rejected.column("locator").to_pylist(), r.rejected.column("reason").to_pylist()))
    assert reasons == {"line 3": "duplicate doc id 'a' in this shard", "line 4": "field 'id' is missing or null"}


def test_integer_source_ids_become_strings(tmp_path):
    path = write_jsonl(tmp_path / "ids.jsonl", [{"id": 10, "text": "one"}, {"id": 11, "text": "two"}])
    r = _read(path)
    assert r.accepted.column("doc_id").to_pylist() == ["10", "11"]


# ---------------------------------------------------------------- passthrough and ids


def test_passthrough_fields_survive(tmp_path):
    rows = [
        {
            "text": "alpha text",
            "lang": "en",
            "n": 1,
            "score": 0.25,
            "flag": True,
            "meta": {"url": "http://a", "tags": ["x", "y"], "depth": {"k": 1}},
        },
        {
            "text": "beta text",
            "lang": "fr",
            "n": 2,
            "score": 1.5,
            "flag": False,
            "meta": {"url": "http://b", "tags": [], "depth": {"k": 2}},
        },
    ]
    path = write_jsonl(tmp_path / "pass.jsonl", rows)
    r = _read(path)
    _check_accounting(r)
    got = r.accepted.to_pylist()
    for src, out in zip(rows, got):
        for field, value in src.items():
            assert out[field] == value, field
    assert r.accepted.column_names == ["shard", "doc_id", "text", "lang", "n", "score", "flag", "meta"]


@pytest.mark.parametrize(
    "values",
    [
        [1, "two"],
        [{"a": 1}, {"b": "x"}],
    ],
    ids=["int-and-string", "dicts-with-different-keys"],
)
def test_heterogeneous_passthrough_fields_survive(tmp_path, values):
    path = write_jsonl(tmp_path / "het.jsonl", [{"text": f"doc {i}", "extra": v} for i, v in enumerate(values)])
    r = _read(path)
    # No single Arrow type holds these values unchanged, so the column is JSON (DuckDB reads it as JSON).
    assert r.accepted.schema.field("extra").type == pa.json_()
    assert passthrough_values(r.accepted.column("extra")) == values


def test_doc_ids_are_stable_and_distinct(small_source, tmp_path):
    a = _read(small_source / "alpha.jsonl")
    b = _read(small_source / "alpha.jsonl")
    assert a.accepted.column("doc_id").to_pylist() == b.accepted.column("doc_id").to_pylist()
    assert a.accepted.equals(b.accepted)

    path = write_jsonl(tmp_path / "dups.jsonl", [{"text": "same"}, {"text": "other"}, {"text": "same"}, {"text": "same"}])
    r = _read(path)
    _check_accounting(r)
    ids = r.accepted.column("doc_id").to_pylist()
    assert r.accepted.num_rows == 4
    assert len(set(ids)) == 4
    assert ids[2].startswith(ids[0]) and ids[3].startswith(ids[0])
    # Content-hash ids do not depend on the file or shard the text sits in.
    moved = write_jsonl(tmp_path / "elsewhere.jsonl", [{"text": "other"}])
    assert _read(moved).accepted.column("doc_id").to_pylist() == [ids[1]]


def test_doc_ids_function():
    ids = doc_ids(["x", "y", "x"], None)
    assert ids[0] != ids[1] and ids[0] != ids[2] and len(set(ids)) == 3
    assert doc_ids(["x", "y", "x"], None) == ids
    assert doc_ids(["a", "b"], [1, None]) == ["1", None]


# ---------------------------------------------------------------- unreadable files


def test_corrupt_gzip_names_the_file(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage-not-gzip")
    with pytest.raises(SourceError, match=r"bad\.jsonl\.gz"):
        _read(path)


def test_corrupt_parquet_names_the_file(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match=r"bad\.parquet"):
        _read(path)


def test_file_fingerprint_follows_content(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "x"}])
    c = write_jsonl(tmp_path / "c.jsonl", [{"text": "y"}])
    assert file_fingerprint(a) == file_fingerprint(b) != file_fingerprint(c)


# ---------------------------------------------------------------- known engine bugs (edge cases)


def test_renamed_passthrough_column_does_not_duplicate_a_name(tmp_path):
    path = write_jsonl(tmp_path / "clash.jsonl", [{"text": "hello", "shard": "x", "source_shard": "y"}])
    r = _read(path)
    names = r.accepted.column_names
    assert len(names) == len(set(names)), names


def test_adding_a_file_never_changes_an_existing_files_key(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "my-data.jsonl", [{"text": "one"}])
    before = {s.path.name: s.key for s in discover_shards(str(src), tmp_path)}
    write_jsonl(src / "My Data.jsonl", [{"text": "two"}])
    after = {s.path.name: s.key for s in discover_shards(str(src), tmp_path)}
    assert after["my-data.jsonl"] == before["my-data.jsonl"]


# ---------------------------------------------------------------- public corpora's files


def _values(r, field: str) -> list:
    return passthrough_values(r.accepted.column(field))


def _assert_rows_exact(r, rows: list[dict]) -> None:
    """Every row accepted, in order, every field's value exactly as written (compared as JSON, so 1 is not 1.0)."""
    _check_accounting(r)
    assert r.rejected.num_rows == 0 and r.accepted.num_rows == len(rows)
    for field in rows[0]:
        got = _values(r, field)
        assert [json.dumps(v) for v in got] == [json.dumps(row[field]) for row in rows], field


@pytest.mark.parametrize(
    "name, rows",
    [
        *corpora.shapes(),
        ("part-0.jsonl.bz2", corpora.pile(9)),
        ("part-1.jsonl.xz", corpora.slimpajama(10)),
        ("part-2.json.zst", corpora.hf_json(11)),
    ],
)
def test_public_corpus_files_read_exactly(tmp_path, name, rows):
    path = corpora.write(tmp_path / name, rows)
    (shard,) = discover_shards(str(tmp_path), tmp_path / "home")
    assert shard.path.name == name
    r = read_shard(shard)
    _assert_rows_exact(r, rows)
    assert list(r.columns) == list(rows[0])  # the source's field order, for `tledit export`
    # The data version is the hash of the file's bytes as stored (compressed), not of what they decompress to.
    assert r.digest == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    if "metadata" in rows[0]:  # Dolma's metadata keys differ by row: kept as JSON, every value as written
        assert r.accepted.schema.field("metadata").type == pa.json_()


def test_the_issues_mixed_folder_every_file_and_document_taken(tmp_path):
    src = tmp_path / "src"
    files = corpora.mixed_folder(src)
    (src / "README.md").write_text("# a corpus\n")
    (src / "dataset_info.json").write_text('{"description": "metadata, not a corpus file"}')
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    found = discover_source(str(src), tmp_path / "home")
    assert sorted(s.path.name for s in found.shards) == sorted(files)
    assert [(n.name, n.reason.split(";")[0]) for n in found.not_taken] == [("README.md", "not a corpus file (suffix '.md'")]
    total = 0
    for shard in found.shards:
        r = read_shard(shard)
        _assert_rows_exact(r, files[shard.path.name])
        total += r.accepted.num_rows
    assert total == 60
    # The source-level rejects as a table: REJECT_SCHEMA, no shard, the file's path as its locator.
    table = pq.read_table(write_not_taken(tmp_path / "home", found.not_taken))
    assert table.schema == REJECT_SCHEMA
    assert table.to_pylist() == [
        {"shard": None, "source_file": "README.md", "locator": str(src / "README.md"), "reason": found.not_taken[0].reason}
    ]


def test_keys_stay_distinct_and_a_new_format_never_takes_an_existing_key(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "part.jsonl", [{"text": "one"}])
    write_jsonl(src / "c4-train.00000-of-01024.jsonl", [{"text": "two"}])
    before = {s.path.name: s.key for s in discover_shards(str(src), tmp_path)}
    assert before["part.jsonl"] == "part"
    # Same stems in newer formats: `a.json.gz` sorts before `a.jsonl`, yet the existing file keeps its key.
    corpora.write(src / "part.json.gz", corpora.c4())
    corpora.write(src / "c4-train.00000-of-01024.json.gz", corpora.c4(1))
    corpora.write(src / "part.jsonl.zst", corpora.pile())
    after = {s.path.name: s.key for s in discover_shards(str(src), tmp_path)}
    assert {k: after[k] for k in before} == before
    assert len(set(after.values())) == len(after) == 5 and all(KEY_RE.match(k) for k in after.values())
    assert discover_shards(str(src), tmp_path) == discover_shards(str(src), tmp_path)  # stable


def test_json_array_is_read_whole_as_records(tmp_path):
    rows = corpora.hf_json()
    path = tmp_path / "records.json"
    path.write_bytes(b"\xef\xbb\xbf\n  " + json.dumps(rows[:3] + [7] + rows[3:], indent=2).encode())
    r = _read(path)
    _check_accounting(r)
    assert r.accepted.column("text").to_pylist() == [row["text"] for row in rows]
    assert r.rejected.to_pylist() == [
        {"shard": "records", "source_file": "records.json", "locator": "item 4", "reason": "a JSON number, not an object"}
    ]


@pytest.mark.parametrize(
    "body, problem",
    [
        (b'[{"text": "a"},\n{"text": "b"', "it starts with '[' (one JSON array) but is not one: Expecting ',' delimiter"),
        (b'[{"text": "a"}]\n{"text": "b"}\n', "it starts with '[' (one JSON array) but is not one: Extra data at line 2"),
    ],
)
def test_a_cut_or_extended_json_array_is_never_half_read(tmp_path, body, problem):
    path = tmp_path / "cut.json.gz"
    path.write_bytes(gzip.compress(body))
    with pytest.raises(SourceError, match=re.escape(f"shard 'cut': cannot read cut.json.gz: {problem}")) as info:
        _read(path)
    assert "\n" not in str(info.value)


def test_a_jsonl_file_stays_json_lines_even_when_a_line_is_an_array(tmp_path):
    path = tmp_path / "lines.jsonl"
    path.write_text('[1, 2]\n{"text": "kept"}\n')
    r = _read(path)
    assert r.accepted.column("text").to_pylist() == ["kept"]
    assert r.rejected.column("reason").to_pylist() == ["a JSON array, not an object"]


@pytest.mark.parametrize(
    "suffix, kind", [(".jsonl.zst", "zstd"), (".json.bz2", "bzip2"), (".jsonl.xz", "xz"), (".json.gz", "gzip")]
)
def test_a_truncated_compressed_file_fails_whole(tmp_path, suffix, kind):
    rows = [{"text": t} for t in corpora.texts(200)] * 5
    data = corpora.compress(corpora.json_lines(rows), suffix)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        SourceError,
        match=rf"cut{re.escape(suffix)}: {kind} stream ends early (after line \d+|at its start): the file is truncated",
    ):
        _read(path)


@pytest.mark.parametrize("suffix, kind", [(".jsonl.zst", "zstd"), (".json.bz2", "bzip2"), (".jsonl.xz", "xz")])
def test_a_corrupt_compressed_file_names_it(tmp_path, suffix, kind):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(corpora.compress(b'{"text": "x"}\n', suffix)[:6] + b"garbage that is not compressed data" * 3)
    with pytest.raises(SourceError, match=rf"bad{re.escape(suffix)}: (corrupt {kind}|{kind} stream ends early)"):
        _read(path)


def test_zstd_files_of_several_frames_read_whole(tmp_path):
    rows = [{"text": t} for t in corpora.texts(6)]
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(b"".join(corpora.compress(corpora.json_lines([row]), ".zst") for row in rows))
    assert _read(path).accepted.column("text").to_pylist() == [row["text"] for row in rows]


def test_a_json_array_cut_inside_its_compression_says_so(tmp_path):
    rows = [{"text": t} for t in corpora.texts(200)] * 100  # several blocks (1 MiB each) of decompressed bytes
    data = gzip.compress(json.dumps(rows).encode(), mtime=0)
    path = tmp_path / "big.json.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"big\.json\.gz: gzip stream ends early inside its JSON array: the file is truncated"):
        _read(path)
