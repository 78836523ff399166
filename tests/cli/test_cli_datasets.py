"""`ms show REV:PATH --schema` (table and --json) and dataset changes in `ms diff`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from modelstore.cli.main import main

V1 = "id,age,score,city\n1,20,0.5,paris\n2,30,1.5,rome\n3,40,,oslo\n4,50,2.5,rome\n"
V2 = "id,age,score,zip\n1,20,1.5,75001\n2,30,2.5,x\n3,40,,150\n4,50,3.5,118\n5,60,4.5,NA\n"


def ms(capsys: pytest.CaptureFixture[str], *args: str, expect: int = 0) -> str:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == expect, f"ms {' '.join(args)} exited {code}, wanted {expect}: {out}{err}"
    return out + err


@pytest.fixture
def work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Path:
    w = tmp_path / "w"
    ms(capsys, "init", str(w))
    monkeypatch.chdir(w)
    (w / "data").mkdir()
    (w / "data" / "train.csv").write_text(V1)
    (w / "model.bin").write_bytes(b"\0" * 64)
    ms(capsys, "add", ".")
    ms(capsys, "commit", "-m", "v1")
    (w / "data" / "train.csv").write_text(V2)
    ms(capsys, "add", ".")
    ms(capsys, "commit", "-m", "v2")
    return w


def test_show_schema_table(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ms(capsys, "show", "HEAD~1:data/train.csv", "--schema")
    assert out.splitlines() == [
        "data/train.csv: csv (','), 4 row(s), 4 column(s)",
        "column  type    nulls  mean       std  min  max",
        "id      int      0.0%   2.5   1.11803    1    4",
        "age     int      0.0%    35   11.1803   20   50",
        "score   float   25.0%   1.5  0.816497  0.5  2.5",
        "city    string   0.0%     -         -    -    -",
    ]
    # a bare path is the file at HEAD
    assert "data/train.csv: csv (','), 5 row(s)" in ms(capsys, "show", "data/train.csv", "--schema")


def test_show_schema_json(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(ms(capsys, "show", "HEAD:data/train.csv", "--schema", "--json"))
    assert (doc["format"], doc["rows"], doc["delimiter"]) == ("csv", 5, ",")
    cols = {c["name"]: c for c in doc["columns"]}
    assert cols["zip"]["type"] == "string" and cols["zip"]["nulls"] == 1
    assert cols["score"] == {
        "name": "score",
        "type": "float",
        "arrow_type": None,
        "count": 4,
        "nulls": 1,
        "null_share": 0.2,
        "mean": 3.0,
        "std": 1.118033988749895,
        "min": 1.5,
        "max": 4.5,
    }


def test_show_schema_errors_are_one_line(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ms(capsys, "show", "HEAD:model.bin", "--schema", expect=2)
    assert out == "ms: error: model.bin: not a dataset (CSV, TSV or Parquet)\n"
    out = ms(capsys, "show", "HEAD:nope.csv", "--schema", expect=7)
    assert out == "ms: error: nope.csv: not in HEAD\n"
    out = ms(capsys, "show", "HEAD:data/train.csv", expect=2)
    assert "add --schema" in out and len(out.splitlines()) == 1
    (work / "data" / "train.csv").write_text("a,b\n1,2\n3\n")
    ms(capsys, "add", ".")
    ms(capsys, "commit", "-m", "ragged")
    out = ms(capsys, "show", "HEAD:data/train.csv", "--schema", expect=12)
    assert out == "ms: error: data/train.csv: data row 2 has 1 field(s), the header has 2\n"


def test_diff_shows_schema_rows_and_changed_stats(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ms(capsys, "diff", "HEAD~1", "HEAD")
    lines = out.splitlines()
    start = lines.index("data/train.csv: csv, rows 4 -> 5 (+1)")
    assert lines[start + 1 :] == [
        "  added    zip    string",
        "  removed  city   string",
        "  changed  id     mean 2.5 -> 3 (+0.5)  std 1.11803 -> 1.41421 (+0.2962)  max 4 -> 5 (+1)",
        "  changed  age    mean 35 -> 40 (+5)  std 11.1803 -> 14.1421 (+2.962)  max 50 -> 60 (+10)",
        "  changed  score  nulls 25.0% -> 20.0% (-5.0%)  mean 1.5 -> 3 (+1.5)  "
        "std 0.816497 -> 1.11803 (+0.3015)  min 0.5 -> 1.5 (+1)  max 2.5 -> 4.5 (+2)",
    ]
    doc = json.loads(ms(capsys, "diff", "HEAD~1", "HEAD", "--json"))
    d = doc["files"][0]["dataset"]
    assert d["rows"] == {"old": 4, "new": 5, "delta": 1}
    assert [c["name"] for c in d["added"]] == ["zip"]
    assert doc["files"][0]["dataset_error"] is None


def test_diff_without_datasets(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--no-datasets", "--stat"):
        out = ms(capsys, "diff", "HEAD~1", "HEAD", flag)
        assert "rows" not in out and "added" not in out
        assert out.splitlines()[0].startswith("M  data/train.csv")
    doc = json.loads(ms(capsys, "diff", "HEAD~1", "HEAD", "--json", "--no-datasets"))
    assert doc["files"][0]["dataset"] is None


def test_large_numbers_and_tiny_null_changes_stay_readable(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = "v,w\n" + "".join(f"{1_000_000 + i},{'' if i == 0 else i}\n" for i in range(2000))
    (work / "big.csv").write_text(big)
    ms(capsys, "add", ".")
    ms(capsys, "commit", "-m", "big")
    (work / "big.csv").write_text(big + "2000000,\n")
    out = ms(capsys, "diff")
    assert "mean 1001000 -> 1001499 (+499.3)" in out  # no exponent below 1e15
    assert "nulls 0.050% -> 0.100% (+0.050%)" in out  # a 0.05 % change is not "+0.0%"


def test_diff_reordered_rows_change_nothing(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = V2.splitlines(keepends=True)
    (work / "data" / "train.csv").write_text(lines[0] + "".join(reversed(lines[1:])))
    out = ms(capsys, "diff")  # index vs working tree: the working file is read
    assert "data/train.csv: csv, 5 rows; schema and statistics unchanged" in out
