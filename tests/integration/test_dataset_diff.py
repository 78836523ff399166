"""Dataset diffs through the store: CSV and Parquet versions committed, compared column by
column (schema, rows, statistics); schemas read back through the api."""

from __future__ import annotations

import copy
import io
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelstore import Repository, api
from modelstore import datasets as ds
from modelstore import diff as msdiff
from modelstore.errors import BadArgumentError, PathError

V1 = """id,age,score,city,code
1,20,0.5,paris,7
2,30,1.5,rome,8
3,40,,oslo,9
4,50,2.5,rome,10
"""
# city removed, code retyped (int -> string), zip added, two rows appended, score drifts by +1
V2 = """id,age,score,code,zip
1,20,1.5,A7,75001
2,30,2.5,A8,100
3,40,,A9,150
4,50,3.5,A10,118
5,60,4.5,B1,NA
6,70,5.5,B2,1000
"""


def stat(old: Any, new: Any) -> dict[str, Any]:
    return {"old": old, "new": new, "delta": new - old}


def numeric(name: str, old: tuple[Any, ...], new: tuple[Any, ...], t: str = "int") -> Any:
    """A column entry: (null_share, mean, std, min, max) on each side."""
    keys = ("null_share", "mean", "std", "min", "max")
    return {
        "name": name,
        "old_type": t,
        "new_type": t,
        "changed": old != new,
        "stats": {k: stat(o, n) for k, o, n in zip(keys, old, new, strict=True)},
    }


EXPECTED: dict[str, Any] = {
    "format": {"old": "csv", "new": "csv"},
    "rows": {"old": 4, "new": 6, "delta": 2},
    "changed": True,
    "added": [{"name": "zip", "type": "int"}],
    "removed": [{"name": "city", "type": "string"}],
    "retyped": [{"name": "code", "old_type": "int", "new_type": "string"}],
    "columns": [
        numeric("id", (0.0, 2.5, math.sqrt(5 / 4), 1, 4), (0.0, 3.5, math.sqrt(17.5 / 6), 1, 6)),
        numeric(
            "age", (0.0, 35.0, math.sqrt(500 / 4), 20, 50), (0.0, 45.0, math.sqrt(1750 / 6), 20, 70)
        ),
        numeric(
            "score",
            (0.25, 1.5, math.sqrt(2 / 3), 0.5, 2.5),
            (1 / 6, 3.5, math.sqrt(10 / 5), 1.5, 5.5),
            "float",
        ),
        {
            "name": "code",
            "old_type": "int",
            "new_type": "string",
            "changed": False,
            "stats": {"null_share": stat(0.0, 0.0)},
        },
    ],
}


def commit_all(repo: Repository, msg: str) -> bytes:
    repo.add([str(repo.workdir)])
    return repo.commit(msg)


def only(res: msdiff.DiffResult) -> msdiff.FileDiff:
    assert len(res.files) == 1, [f.path for f in res.files]
    return res.files[0]


def test_csv_schema_rows_and_drift_between_commits(repo: Repository) -> None:
    w = repo.workdir
    (w / "data").mkdir()
    (w / "data" / "train.csv").write_text(V1)
    commit_all(repo, "v1")
    (w / "data" / "train.csv").write_text(V2)
    commit_all(repo, "v2")

    fd = only(msdiff.diff(repo, "HEAD~1", "HEAD"))
    assert (fd.path, fd.status, fd.dataset_error, fd.tensors) == (
        "data/train.csv",
        "modified",
        None,
        None,
    )
    assert fd.to_json()["dataset"] == EXPECTED
    # the same through the helper `ms compare` uses, and without the dataset pass
    assert msdiff.dataset_diff(repo, "HEAD~1", "HEAD", "data/train.csv").to_json() == EXPECTED
    assert only(api.diff(repo, "HEAD~1", "HEAD", datasets=False)).dataset is None


def parquet_v(text: str, types: dict[str, pa.DataType]) -> bytes:
    """The CSV text as a Parquet file with the given column types (NA and blanks: null)."""
    lines = [line.split(",") for line in text.strip().splitlines()]
    head, rows = lines[0], lines[1:]
    cols = {}
    for j, name in enumerate(head):
        raw = [r[j] for r in rows]
        t = types[name]
        vals: list[Any] = [None if v in ("", "NA") else v for v in raw]
        if pa.types.is_integer(t):
            vals = [None if v is None else int(v) for v in vals]
        elif pa.types.is_floating(t):
            vals = [None if v is None else float(v) for v in vals]
        cols[name] = pa.array(vals, t)
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf, row_group_size=4)  # two row groups in v2
    return buf.getvalue()


def test_parquet_schema_rows_and_drift_between_commits(repo: Repository) -> None:
    i64, f64, s = pa.int64(), pa.float64(), pa.string()
    t1 = {"id": i64, "age": i64, "score": f64, "city": s, "code": i64}
    t2 = {"id": i64, "age": i64, "score": f64, "code": s, "zip": i64}
    path = repo.workdir / "train.parquet"
    path.write_bytes(parquet_v(V1, t1))
    commit_all(repo, "v1")
    path.write_bytes(parquet_v(V2, t2))
    commit_all(repo, "v2")

    expected = copy.deepcopy(EXPECTED)
    expected["format"] = {"old": "parquet", "new": "parquet"}
    expected["retyped"] = [
        {"name": "code", "old_type": "int (int64)", "new_type": "string (string)"}
    ]
    expected["columns"][3].update(old_type="int (int64)", new_type="string (string)")
    fd = only(msdiff.diff(repo, "HEAD~1", "HEAD"))
    assert fd.to_json()["dataset"] == expected

    schema = api.dataset_schema(repo, "HEAD:train.parquet")
    assert [(c.name, c.type, c.arrow_type) for c in schema.columns] == [
        ("id", "int", "int64"),
        ("age", "int", "int64"),
        ("score", "float", "double"),
        ("code", "string", "string"),
        ("zip", "int", "int64"),
    ]


def test_working_tree_version_is_summarized(repo: Repository) -> None:
    w = repo.workdir
    (w / "t.csv").write_text(V1)
    commit_all(repo, "v1")
    (w / "t.csv").write_text(V1 + "5,60,3.5,rome,11\n")  # not staged
    d = only(msdiff.diff(repo)).dataset  # index vs working tree
    assert d is not None and (d.old_rows, d.new_rows) == (4, 5)
    assert not (d.added or d.removed or d.retyped)
    changed = {c.name for c in d.columns if c.changed}
    assert changed == {"id", "age", "score", "code"}


def test_malformed_version_is_reported_and_the_diff_goes_on(repo: Repository) -> None:
    w = repo.workdir
    (w / "t.csv").write_text(V1)
    (w / "notes.txt").write_text("a\n")
    commit_all(repo, "v1")
    (w / "t.csv").write_text(V1 + "5,60\n")
    (w / "notes.txt").write_text("b\n")
    commit_all(repo, "v2")
    files = {f.path: f for f in msdiff.diff(repo, "HEAD~1", "HEAD").files}
    assert files["t.csv"].dataset is None
    assert files["t.csv"].dataset_error == "t.csv: data row 5 has 2 field(s), the header has 5"
    assert files["notes.txt"].dataset is None and files["notes.txt"].dataset_error is None


def test_schema_through_the_api_streams_a_many_chunk_file(repo: Repository) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal(20_000)
    text = "k,x\n" + "".join(f"{i},{v:.6f}\n" for i, v in enumerate(x))
    (repo.workdir / "big.csv").write_text(text)
    commit_all(repo, "big")
    assert len(list(repo.manifest_chunks(repo.file_manifest("HEAD", "big.csv")))) > 50
    got = api.dataset_schema(repo, "HEAD:big.csv")
    local = ds.summarize(io.BytesIO(text.encode()), "big.csv")
    assert got.to_json() == local.to_json()
    assert api.dataset_schema(repo, "big.csv").rows == 20_000  # a bare path is at HEAD
    assert got.column("x") is not None
    assert got.column("x").mean == pytest.approx(float(np.mean(np.round(x, 6))), rel=1e-12)


def test_schema_errors(repo: Repository) -> None:
    (repo.workdir / "w.bin").write_bytes(b"\0" * 100)
    commit_all(repo, "bin")
    with pytest.raises(BadArgumentError, match="not a dataset"):
        api.dataset_schema(repo, "HEAD:w.bin")
    with pytest.raises(PathError, match="not in HEAD"):
        api.dataset_schema(repo, "HEAD:missing.csv")
    with pytest.raises(BadArgumentError, match="REV:PATH"):
        api.dataset_schema(repo, "HEAD:")


def test_added_dataset_is_not_summarized(repo: Repository) -> None:
    (repo.workdir / "a.txt").write_text("x\n")
    commit_all(repo, "v1")
    (repo.workdir / "new.csv").write_text(V1)
    commit_all(repo, "v2")
    fd = only(msdiff.diff(repo, "HEAD~1", "HEAD"))
    assert (fd.status, fd.dataset, fd.dataset_error) == ("added", None, None)
