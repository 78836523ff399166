"""datasets: CSV/TSV/Parquet schemas and statistics in one streaming pass, and their diffs."""

from __future__ import annotations

import csv
import io
import math
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from modelstore import datasets as ds
from modelstore.errors import BadArgumentError, FormatError


def summary(text: str | bytes, name: str = "t.csv", **kw: Any) -> ds.DatasetSummary:
    data = text.encode() if isinstance(text, str) else text
    return ds.summarize(io.BytesIO(data), name, **kw)


def types(s: ds.DatasetSummary) -> dict[str, str]:
    return {c.name: c.type for c in s.columns}


def col(s: ds.DatasetSummary, name: str) -> ds.ColumnSummary:
    c = s.column(name)
    assert c is not None, name
    return c


# -- type inference ---------------------------------------------------------------------------
def test_types_inferred_from_every_row() -> None:
    text = (
        "i,f,b,d,t,s,mixed,empty,signs,big\n"
        "1,1.5,true,2024-01-05,2024-01-05T10:00:00,a,1,,1,1\n"
        "-2,2,False,2024-02-29,2024-01-05 11:30,b,x,NA,-,12345678901234567890\n"
        "+3,1e3,TRUE,2023-12-31,2024-01-06,c,2,,2,3\n"
    )
    s = summary(text)
    assert types(s) == {
        "i": "int",
        "f": "float",  # ints and floats together
        "b": "bool",
        "d": "date",
        "t": "datetime",  # a date among datetimes widens to datetime
        "s": "string",
        "mixed": "string",
        "empty": "null",
        "signs": "string",  # a lone sign is not a number
        "big": "float",  # more than 18 digits: not an int64
    }
    assert col(s, "i").min == -2 and col(s, "i").max == 3 and isinstance(col(s, "i").min, int)
    assert col(s, "f").max == 1000.0 and isinstance(col(s, "f").min, float)
    b = col(s, "b")
    assert (b.mean, b.min, b.max) == (pytest.approx(2 / 3), 0, 1)  # bools count as 0/1
    assert col(s, "d").mean is None and col(s, "s").mean is None


def test_type_widens_across_batches_and_string_drops_stats() -> None:
    rows = ["1"] * 10 + ["2.5"] * 10  # int in the first batches, float later
    s = summary("x\n" + "\n".join(rows) + "\n", batch_rows=4)
    assert col(s, "x").type == "float"
    assert col(s, "x").mean == pytest.approx(1.75) and col(s, "x").min == 1.0
    s = summary("x\n" + "\n".join(["1"] * 10 + ["oops"]) + "\n", batch_rows=4)
    x = col(s, "x")
    assert (x.type, x.count, x.mean, x.min) == ("string", 11, None, None)
    s = summary("x\n" + "\n".join(["true"] * 5 + ["1"]) + "\n", batch_rows=2)
    assert col(s, "x").type == "string"  # bool and int do not mix


@pytest.mark.parametrize("token", ds.NULL_TOKENS)
def test_null_tokens(token: str) -> None:
    s = summary(f"a,b\n1,{token}\n2,3\n3,{token}\n")
    b = col(s, "b")
    assert (b.type, b.count, b.nulls, b.null_share) == ("int", 1, 2, pytest.approx(2 / 3))
    assert (b.mean, b.std, b.min, b.max) == (3.0, 0.0, 3, 3)


def test_float_nan_spellings_are_nulls_but_inf_is_a_value() -> None:
    s = summary("x\n1.0\n-nan\n3.0\ninf\n")
    x = col(s, "x")
    assert (x.count, x.nulls, x.max) == (3, 1, math.inf)
    assert x.to_json()["max"] == "inf" and x.to_json()["std"] == "nan"


# -- statistics against numpy and pandas ------------------------------------------------------
def test_stats_match_pandas(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 5000
    df = pd.DataFrame(
        {
            "ints": rng.integers(-1000, 1000, n),
            "floats": rng.standard_normal(n) * 1e3 + 1e6,  # large offset: needs a stable std
            "with_nulls": np.where(rng.random(n) < 0.2, np.nan, rng.random(n)),
            "label": rng.integers(0, 2, n).astype(bool),
            "name": [f"n{i % 17}" for i in range(n)],
        }
    )
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    with open(path, "rb") as f:
        s = ds.summarize(f, "d.csv", batch_rows=333)
    assert s.rows == n and [c.name for c in s.columns] == list(df.columns)
    assert types(s) == {
        "ints": "int",
        "floats": "float",
        "with_nulls": "float",
        "label": "bool",
        "name": "string",
    }
    back = pd.read_csv(path)  # compare with what pandas parses from the same text
    for name in ("ints", "floats", "with_nulls", "label"):
        c = col(s, name)
        v = back[name].astype(float)
        assert c.nulls == int(v.isna().sum()) and c.count == int(v.notna().sum())
        assert c.mean == pytest.approx(v.mean(), rel=1e-12)
        assert c.std == pytest.approx(v.std(ddof=0), rel=1e-9)  # population std
        assert c.min == v.min() and c.max == v.max()
    assert col(s, "with_nulls").null_share == pytest.approx(back["with_nulls"].isna().mean())


def test_batch_size_changes_only_the_last_bits() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(3000) + 50
    text = "x,k\n" + "".join(f"{float(v)!r},{i}\n" for i, v in enumerate(x))
    results = [summary(text, batch_rows=r) for r in (1, 7, 256, 100_000)]
    for s in results:
        c = col(s, "x")
        assert c.mean == pytest.approx(float(np.mean(x)), rel=1e-13)
        assert c.std == pytest.approx(float(np.std(x)), rel=1e-11)
        assert (c.min, c.max, c.count) == (float(x.min()), float(x.max()), 3000)
        assert (col(s, "k").min, col(s, "k").max) == (0, 2999)


# -- CSV reading ------------------------------------------------------------------------------
def test_quoting_and_embedded_newlines() -> None:
    text = (
        'id,text,price\n1,"hello, world",2.5\n2,"line one\nline two",3.5\n'
        '3,"she said ""hi""",NA\n"4","",4.5\n'
    )
    s = summary(text)
    assert s.rows == 4
    assert types(s) == {"id": "int", "text": "string", "price": "float"}
    t = col(s, "text")
    assert (t.count, t.nulls) == (3, 1)  # "" quoted is still empty: a null
    assert col(s, "price").nulls == 1 and col(s, "price").mean == pytest.approx(3.5)


def test_empty_and_header_only_files() -> None:
    s = summary("")
    assert (s.rows, s.columns, s.format) == (0, [], "csv")
    s = summary("a,b,a\n")
    assert s.rows == 0 and [(c.name, c.type, c.count) for c in s.columns] == [
        ("a", "null", 0),
        ("b", "null", 0),
        ("a.1", "null", 0),  # repeated names made unique, as pandas does
    ]
    assert s.columns[0].null_share is None


@pytest.mark.parametrize(
    ("text", "row", "fields"),
    [
        ("a,b\n1,2\n3\n", 2, 1),
        ("a,b\n1,2\n3,4,5\n", 2, 3),
        ('a,b\n"1",2\n3\n', 2, 1),  # the csv module path (quotes)
        ("a,b\n" + "1,2\n" * 5000 + "1,2,3\n", 5001, 3),  # far into the file
    ],
)
def test_ragged_rows_are_errors_naming_the_row(text: str, row: int, fields: int) -> None:
    with pytest.raises(FormatError, match=f"data row {row} has {fields} field"):
        summary(text, block_size=64)


def test_blank_lines_crlf_bom_and_invalid_utf8() -> None:
    text = b"\xef\xbb\xbfa,b\r\n1,x\xff\r\n\r\n\n2,y\r\n"
    s = summary(text)
    assert s.rows == 2 and [c.name for c in s.columns] == ["a", "b"]
    assert types(s) == {"a": "int", "b": "string"}


def test_tsv_and_delimiter_sniffing() -> None:
    s = summary("a\tb\n1\t2,5\n", "x.tsv")
    assert (s.format, s.delimiter, types(s)) == ("tsv", "\t", {"a": "int", "b": "string"})
    s = summary("a;b\n1;2.5\n")
    assert (s.delimiter, types(s)) == (";", {"a": "int", "b": "float"})
    s = summary("a,b;c\n1,2;3\n")  # a comma in the header wins
    assert s.delimiter == "," and [c.name for c in s.columns] == ["a", "b;c"]


def reference(text: str) -> tuple[int, list[int]]:
    """Rows and per-column null counts, by the csv module over the whole text."""
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r][1:]
    nulls = [sum(r[j] in ds.NULL_TOKENS for r in rows) for j in range(len(rows[0]))]
    return len(rows), nulls


_cell = hs.one_of(
    hs.integers(-999, 999).map(str),
    hs.floats(-1e6, 1e6, allow_nan=False).map(repr),
    hs.sampled_from(["", "NA", "x", "true", "a,b", 'q"q', "l1\nl2", "2024-01-02", " "]),
)


@settings(max_examples=100, deadline=None)
@given(
    rows=hs.lists(hs.lists(_cell, min_size=3, max_size=3), min_size=1, max_size=40),
    block=hs.integers(1, 200),
    batch=hs.integers(1, 50),
    crlf=hs.booleans(),
)
def test_block_size_never_changes_the_summary(
    rows: list[list[str]], block: int, batch: int, crlf: bool
) -> None:
    out = io.StringIO(newline="")
    w = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    w.writerow(["a", "b", "c"])
    w.writerows(rows)
    text = out.getvalue()
    whole = summary(text, batch_rows=batch, block_size=1 << 20).to_json()
    assert summary(text, batch_rows=batch, block_size=block).to_json() == whole
    n, nulls = reference(text)
    assert whole["rows"] == n and [c["nulls"] for c in whole["columns"]] == nulls


def test_block_boundaries_and_switch_to_the_csv_module() -> None:
    """A quote late in the file moves parsing to the csv module mid-way: nothing changes."""
    rng = np.random.default_rng(3)
    lines = [f"{i},{v:.5f},w{i % 7}" for i, v in enumerate(rng.standard_normal(2000))]
    lines[1500] = '1500,0.5,"quoted, with comma"'
    text = "k,v,s\n" + "\n".join(lines) + "\n"
    results = [summary(text, block_size=b).to_json() for b in (1, 13, 4096, 1 << 20)]
    assert all(r == results[0] for r in results)
    assert results[0]["rows"] == 2000 and results[0]["columns"][2]["type"] == "string"


# -- Parquet ----------------------------------------------------------------------------------
def parquet_bytes(table: pa.Table, **kw: Any) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    return buf.getvalue()


def test_parquet_types_nulls_and_stats() -> None:
    rng = np.random.default_rng(5)
    n = 10_000
    x = rng.standard_normal(n)
    x[::10] = np.nan  # NaN counts as null, like CSV "NaN"
    k = pa.array(rng.integers(0, 100, n), pa.int32())
    table = pa.table(
        {
            "k": k,
            "x": pa.array(x, from_pandas=False),
            "s": pa.array([None if i % 4 == 0 else f"s{i}" for i in range(n)]),
            "flag": pa.array(rng.random(n) < 0.3),
            "day": pa.array(np.arange(n) % 365, pa.int32()).cast(pa.date32()),
            "cat": pa.array([f"c{i % 3}" for i in range(n)]).dictionary_encode(),
        }
    )
    s = summary(parquet_bytes(table, row_group_size=1234), "data.bin")  # by content
    assert (s.format, s.rows) == ("parquet", n)
    assert types(s) == {
        "k": "int",
        "x": "float",
        "s": "string",
        "flag": "bool",
        "day": "date",
        "cat": "string",
    }
    assert col(s, "k").arrow_type == "int32" and col(s, "x").arrow_type == "double"
    kk = k.to_numpy()
    assert col(s, "k").mean == pytest.approx(kk.mean(), rel=1e-12)
    assert (col(s, "k").min, col(s, "k").max) == (int(kk.min()), int(kk.max()))
    xc = col(s, "x")
    assert (xc.count, xc.nulls) == (n - 1000, 1000)
    assert xc.mean == pytest.approx(np.nanmean(x), rel=1e-12)
    assert xc.std == pytest.approx(np.nanstd(x), rel=1e-12)
    assert col(s, "s").nulls == 2500 and col(s, "s").null_share == 0.25
    assert col(s, "flag").mean == pytest.approx(float(np.mean(table["flag"].to_numpy())))


def test_parquet_empty_and_damaged() -> None:
    empty = pa.table({"a": pa.array([], pa.int64()), "b": pa.array([], pa.string())})
    s = summary(parquet_bytes(empty), "e.parquet")
    assert s.rows == 0 and types(s) == {"a": "int", "b": "string"}
    with pytest.raises(FormatError, match="unreadable Parquet"):
        summary(b"PAR1" + b"\0" * 64 + b"PAR1", "bad.parquet")
    with pytest.raises(FormatError, match="no PAR1 magic"):
        summary(b"a,b\n1,2\n", "bad.parquet")


def test_detect_format() -> None:
    pqb = parquet_bytes(pa.table({"a": [1]}))
    assert ds.detect_format(io.BytesIO(pqb), "x.csv") == "parquet"  # content wins
    assert ds.detect_format(io.BytesIO(b"a\n"), "dir.v2/X.CSV") == "csv"
    assert ds.detect_format(io.BytesIO(b"a\n"), "x.tsv") == "tsv"
    assert ds.detect_format(io.BytesIO(b"a\n"), "x.bin") is None
    assert ds.detect_format(io.BytesIO(b"a\n"), "csv") is None
    with pytest.raises(BadArgumentError, match="not a dataset"):
        summary(b"a,b\n", "model.safetensors")


# -- diffs ------------------------------------------------------------------------------------
def test_diff_summaries_schema_rows_and_stats() -> None:
    old = summary("id,x,y,w\n1,1,3,a\n2,2,4,b\n3,,5,c\n4,4,6,d\n")
    new = summary("id,x,y,z\n1,1,x,0.5\n2,2,4,1\n3,3,5,1\n4,4,6,2\n5,5,7,3\n")
    d = ds.diff_summaries(old, new)
    assert d.to_json() == {
        "format": {"old": "csv", "new": "csv"},
        "rows": {"old": 4, "new": 5, "delta": 1},
        "changed": True,
        "added": [{"name": "z", "type": "float"}],
        "removed": [{"name": "w", "type": "string"}],
        "retyped": [{"name": "y", "old_type": "int", "new_type": "string"}],
        "columns": [
            {
                "name": "id",
                "old_type": "int",
                "new_type": "int",
                "changed": True,
                "stats": {
                    "null_share": {"old": 0.0, "new": 0.0, "delta": 0.0},
                    "mean": {"old": 2.5, "new": 3.0, "delta": 0.5},
                    "std": {
                        "old": math.sqrt(1.25),
                        "new": math.sqrt(2.0),
                        "delta": math.sqrt(2.0) - math.sqrt(1.25),
                    },
                    "min": {"old": 1, "new": 1, "delta": 0},
                    "max": {"old": 4, "new": 5, "delta": 1},
                },
            },
            {
                "name": "x",
                "old_type": "int",
                "new_type": "int",
                "changed": True,
                "stats": {
                    "null_share": {"old": 0.25, "new": 0.0, "delta": -0.25},
                    "mean": {"old": 7 / 3, "new": 3.0, "delta": 3.0 - 7 / 3},
                    "std": {
                        "old": math.sqrt(14 / 9),
                        "new": math.sqrt(2.0),
                        "delta": math.sqrt(2.0) - math.sqrt(14 / 9),
                    },
                    "min": {"old": 1, "new": 1, "delta": 0},
                    "max": {"old": 4, "new": 5, "delta": 1},
                },
            },
            {
                "name": "y",
                "old_type": "int",
                "new_type": "string",
                "changed": False,
                "stats": {"null_share": {"old": 0.0, "new": 0.0, "delta": 0.0}},
            },
        ],
    }
    assert not ds.diff_summaries(old, old).changed


def test_diff_parquet_exact_types() -> None:
    a = summary(parquet_bytes(pa.table({"k": pa.array([1, 2], pa.int32())})), "a.parquet")
    b = summary(parquet_bytes(pa.table({"k": pa.array([1, 2], pa.int64())})), "a.parquet")
    d = ds.diff_summaries(a, b)
    assert [(r.name, r.old_type, r.new_type) for r in d.retyped] == [
        ("k", "int (int32)", "int (int64)")
    ]
    assert d.changed and not d.columns[0].stats["mean"].changed


# -- memory -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_large_csv_in_bounded_memory(tmp_path: Path) -> None:
    """~64 MiB of CSV: the traced peak stays a small fraction of the file."""
    rng = np.random.default_rng(11)
    n = 20_000
    block = "".join(
        f"{i},{x:.6f},{y},name{i % 97},{'true' if y & 1 else 'false'}\n"
        for i, x, y in zip(range(n), rng.standard_normal(n), rng.integers(0, 10**6, n), strict=True)
    ).encode()
    path = tmp_path / "big.csv"
    reps = (64 << 20) // len(block) + 1
    with open(path, "wb") as f:
        f.write(b"id,x,y,name,flag\n")
        for _ in range(reps):
            f.write(block)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            s = ds.summarize(f, "big.csv")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 60 << 20
    assert peak < 10 << 20, f"peak {peak >> 20} MiB for a {size >> 20} MiB file"
    one = summary(b"id,x,y,name,flag\n" + block)  # the same block once: same stats
    assert s.rows == reps * n
    for a, b in zip(s.columns, one.columns, strict=True):
        assert (a.type, a.min, a.max) == (b.type, b.min, b.max)
        assert a.count == reps * b.count
        if a.mean is not None:
            assert a.mean == pytest.approx(b.mean, rel=1e-9)
            assert a.std == pytest.approx(b.std, rel=1e-9)
