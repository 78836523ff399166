"""Layer 1: schema and summary statistics of tabular files (CSV, TSV, Parquet), streamed.

Used by ``diff`` (schema and drift of a modified dataset) and by ``ms show REV:PATH --schema``.
Works on any seekable binary file (see :class:`SeekableReader`): a plain file, ``BytesIO``, a
repository ``ChunkedFile``. Every file is read once, front to back, in bounded memory.

Formats: Parquet is recognised by content (``PAR1`` at both ends; reading it needs pyarrow), CSV
and TSV by name (``.csv``, ``.tsv``, ``.tab``). The first CSV row is the header. The delimiter
of a ``.csv`` file is ``,`` unless its header line has no comma but does have ``;``, a tab or
``|`` (the most frequent of those wins). Quoting is the csv module's default dialect (``"``,
doubled to escape, newlines allowed inside quotes). Text is UTF-8 (a BOM is skipped, invalid
bytes are replaced). Blank lines are skipped; a row with more or fewer fields than the header is
an error naming the row.

CSV column types are inferred over every row: the narrowest of ``int`` (an optional sign and at
most 18 ASCII digits), ``float`` (ints or anything Python's ``float()`` accepts), ``bool``
(``true``/``false`` in lower, title or upper case), ``date`` (``YYYY-MM-DD``), ``datetime``
(ISO 8601 dates with a time) that fits every non-null value, else ``string``; ``null`` when a
column has no non-null value at all. The values in :data:`NULL_TOKENS` are nulls, as are
float NaNs (``-nan``), in Parquet too. Parquet types come from the Arrow schema (``arrow_type``
keeps the exact one).

Statistics of ``int``, ``float`` and ``bool`` columns (bools count as 0/1, so the mean is the
share of ``true``): ``mean``, ``std`` (population standard deviation, ``ddof=0``), ``min``,
``max``, over non-null values, computed per batch of rows with numpy and merged with Chan et
al.'s pairwise update (stable; no sum of squares). Batches hold a fixed number of rows (so the
results do not depend on the read block size), about :data:`BATCH_VALUES` values each (at least
:data:`MIN_BATCH_ROWS` rows), which bounds memory together with the read block.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import operator
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from modelstore.errors import BadArgumentError, FormatError, UnsupportedFormatError

__all__ = [
    "BATCH_VALUES",
    "BLOCK",
    "MIN_BATCH_ROWS",
    "NULL_TOKENS",
    "NUMERIC_TYPES",
    "ColumnChange",
    "ColumnSummary",
    "DatasetDiff",
    "DatasetSummary",
    "SeekableReader",
    "StatChange",
    "detect_format",
    "diff_summaries",
    "summarize",
]

#: field values that count as null in CSV files
NULL_TOKENS = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None")
#: column types that get mean, std, min and max
NUMERIC_TYPES = frozenset({"int", "float", "bool"})
#: bytes read at a time from a CSV file
BLOCK = 1 << 17
#: values (rows x columns) per statistics batch; small enough to stay in cache (fastest)
BATCH_VALUES = 1 << 15
#: the fewest rows per batch (wide files: per-batch overhead stays small)
MIN_BATCH_ROWS = 256
#: the longest CSV line accepted (a file without newlines cannot fill memory)
MAX_LINE = 64 << 20

_NULLS = frozenset(NULL_TOKENS)
_TRUE = frozenset({"true", "True", "TRUE"})
_BOOLS = _TRUE | {"false", "False", "FALSE"}
_SIGNS = frozenset({"+", "-"})
_NOT_INT = str.maketrans("", "", "0123456789+-,")
_MAX_INT_LEN = 18
_STATS = ("mean", "std", "min", "max")
_CSV_NAMES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
_PARQUET_NAMES = (".parquet", ".pq")
_MAGIC = b"PAR1"


class SeekableReader(Protocol):
    """A seekable binary file: a plain file, ``BytesIO``, a repository ``ChunkedFile``."""

    def seek(self, offset: int, whence: int = ..., /) -> int: ...  # noqa: D102
    def tell(self) -> int: ...  # noqa: D102
    def read(self, size: int = ..., /) -> bytes | None: ...  # noqa: D102
    def readinto(self, buffer: memoryview, /) -> int | None: ...  # noqa: D102


def _num(x: float | None) -> float | str | None:
    """JSON has no inf or nan: those become the strings "inf", "-inf", "nan"."""
    if x is None or isinstance(x, int) or math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


# -- results ----------------------------------------------------------------------------------
@dataclass
class ColumnSummary:
    """One column: its type, non-null and null counts, and statistics if it is numeric.

    ``min``/``max`` are ints for ``int`` and ``bool`` columns. ``arrow_type`` is the exact Arrow
    type of a Parquet column (None for CSV).
    """

    name: str
    type: str
    count: int = 0
    nulls: int = 0
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    arrow_type: str | None = None

    @property
    def null_share(self) -> float | None:
        """Nulls per row (None when there are no rows)."""
        rows = self.count + self.nulls
        return self.nulls / rows if rows else None

    def stat(self, name: str) -> float | None:
        """A statistic by name (``null_share``, ``mean``, ``std``, ``min``, ``max``)."""
        value: float | None = getattr(self, name)
        return value

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite numbers as strings)."""
        return {
            "name": self.name,
            "type": self.type,
            "arrow_type": self.arrow_type,
            "count": self.count,
            "nulls": self.nulls,
            "null_share": self.null_share,
            **{k: _num(getattr(self, k)) for k in _STATS},
        }


@dataclass
class DatasetSummary:
    """The schema, row count and per-column statistics of one tabular file."""

    name: str
    format: str
    rows: int
    columns: list[ColumnSummary] = field(default_factory=list)
    delimiter: str | None = None

    def column(self, name: str) -> ColumnSummary | None:
        """The column called ``name``, if any."""
        return next((c for c in self.columns if c.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name,
            "format": self.format,
            "delimiter": self.delimiter,
            "rows": self.rows,
            "columns": [c.to_json() for c in self.columns],
        }


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


@dataclass
class StatChange:
    """One statistic on both sides; ``delta`` is ``new - old`` (None if either is missing)."""

    old: float | None
    new: float | None

    @property
    def delta(self) -> float | None:
        """``new - old``."""
        if self.old is None or self.new is None:
            return None
        if isinstance(self.old, int) and isinstance(self.new, int):
            return self.new - self.old
        with np.errstate(invalid="ignore"):
            return float(np.float64(self.new) - np.float64(self.old))

    @property
    def changed(self) -> bool:
        """Whether the values differ (NaN equals NaN)."""
        return not _same(self.old, self.new)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"old": _num(self.old), "new": _num(self.new), "delta": _num(self.delta)}


@dataclass
class ColumnChange:
    """A column present on both sides: its types and its statistics before and after.

    ``stats`` always has ``null_share``; ``mean``, ``std``, ``min`` and ``max`` only when the
    column is numeric on both sides.
    """

    name: str
    old_type: str
    new_type: str
    stats: dict[str, StatChange]

    @property
    def changed(self) -> bool:
        """Whether any statistic changed."""
        return any(s.changed for s in self.stats.values())

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "name": self.name,
            "old_type": self.old_type,
            "new_type": self.new_type,
            "changed": self.changed,
            "stats": {k: s.to_json() for k, s in self.stats.items()},
        }


@dataclass
class DatasetDiff:
    """Schema, row-count and statistics changes between two versions of a dataset.

    ``added``/``removed`` are columns of one side only (new order, old order); ``retyped``
    names the columns whose type changed; ``columns`` holds every column of both sides, in the
    new order, with its statistics before and after.
    """

    old_format: str
    new_format: str
    old_rows: int
    new_rows: int
    added: list[ColumnSummary]
    removed: list[ColumnSummary]
    retyped: list[ColumnChange]
    columns: list[ColumnChange]

    @property
    def rows_delta(self) -> int:
        """``new_rows - old_rows``."""
        return self.new_rows - self.old_rows

    @property
    def changed(self) -> bool:
        """Whether anything this diff looks at changed."""
        return bool(
            self.added
            or self.removed
            or self.retyped
            or self.rows_delta
            or self.old_format != self.new_format
            or any(c.changed for c in self.columns)
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "format": {"old": self.old_format, "new": self.new_format},
            "rows": {"old": self.old_rows, "new": self.new_rows, "delta": self.rows_delta},
            "changed": self.changed,
            "added": [{"name": c.name, "type": c.type} for c in self.added],
            "removed": [{"name": c.name, "type": c.type} for c in self.removed],
            "retyped": [
                {"name": c.name, "old_type": c.old_type, "new_type": c.new_type}
                for c in self.retyped
            ],
            "columns": [c.to_json() for c in self.columns],
        }


def _type_of(c: ColumnSummary) -> str:
    return f"{c.type} ({c.arrow_type})" if c.arrow_type else c.type


def diff_summaries(old: DatasetSummary, new: DatasetSummary) -> DatasetDiff:
    """Compare two summaries: columns added, removed and retyped, rows, statistics.

    A column is retyped when its type differs, or, for two Parquet versions, its exact Arrow
    type (``int32`` to ``int64``); types are then shown as ``int (int64)``.
    """
    old_by = {c.name: c for c in old.columns}
    new_names = {c.name for c in new.columns}
    added = [c for c in new.columns if c.name not in old_by]
    removed = [c for c in old.columns if c.name not in new_names]
    columns: list[ColumnChange] = []
    retyped: list[ColumnChange] = []
    for n in new.columns:
        o = old_by.get(n.name)
        if o is None:
            continue
        names = ["null_share"]
        if o.type in NUMERIC_TYPES and n.type in NUMERIC_TYPES:
            names += _STATS
        exact = o.arrow_type is not None and n.arrow_type is not None
        differs = o.type != n.type or (exact and o.arrow_type != n.arrow_type)
        ot, nt = (_type_of(o), _type_of(n)) if exact and differs else (o.type, n.type)
        ch = ColumnChange(n.name, ot, nt, {k: StatChange(o.stat(k), n.stat(k)) for k in names})
        columns.append(ch)
        if differs:
            retyped.append(ch)
    return DatasetDiff(old.format, new.format, old.rows, new.rows, added, removed, retyped, columns)


# -- detection --------------------------------------------------------------------------------
def _suffix(name: str) -> str:
    base = name.rsplit("/", 1)[-1].lower()
    dot = base.rfind(".")
    return base[dot:] if dot > 0 else ""


def _is_parquet(f: SeekableReader) -> bool:
    pos = f.tell()
    try:
        size = f.seek(0, io.SEEK_END)
        if size < 12:
            return False
        f.seek(0)
        head = f.read(4)
        f.seek(size - 4)
        tail = f.read(4)
        return head == _MAGIC and tail == _MAGIC
    finally:
        f.seek(pos)


def detect_format(f: SeekableReader, name: str) -> str | None:
    """``parquet``, ``csv``, ``tsv``, or None for a file that is not a dataset.

    Args:
        f: The file (its position is kept).
        name: Its path, for the extension.

    Raises:
        FormatError: A ``.parquet`` file without the Parquet magic.
    """
    if _is_parquet(f):
        return "parquet"
    suffix = _suffix(name)
    if suffix in _PARQUET_NAMES:
        raise FormatError(f"{name}: not a Parquet file (no PAR1 magic at both ends)")
    return _CSV_NAMES.get(suffix)


def _sniff_delimiter(header: str) -> str:
    """``,`` unless the header has none but has ``;``, a tab or ``|`` (the most frequent)."""
    if "," in header:
        return ","
    counts = [(header.count(d), d) for d in (";", "\t", "|")]
    best = max(counts)
    return best[1] if best[0] else ","


# -- statistics -------------------------------------------------------------------------------
class _Moments:
    """Count, mean, sum of squared deviations (Chan et al.), min and max, merged per batch."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.lo: float | None = None
        self.hi: float | None = None

    def add(self, x: npt.NDArray[Any]) -> None:
        """Merge a non-empty batch (ints, or floats without NaN)."""
        nb = int(x.size)
        xf = x.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore", over="ignore"):
            mb = float(xf.mean())
            d = xf - mb
            m2b = float(np.dot(d, d))
        lo, hi = x.min().item(), x.max().item()
        if self.n == 0:
            self.n, self.mean, self.m2, self.lo, self.hi = nb, mb, m2b, lo, hi
            return
        n = self.n + nb
        with np.errstate(invalid="ignore", over="ignore"):
            delta = mb - self.mean
            self.mean += delta * nb / n
            self.m2 += m2b + delta * delta * (self.n * nb / n)
        self.n = n
        assert self.lo is not None and self.hi is not None
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)

    def fill(self, c: ColumnSummary) -> None:
        """Set ``c``'s mean, std, min and max (ints stay ints for int and bool columns)."""
        if not self.n:
            return
        c.mean = self.mean
        c.std = math.sqrt(self.m2 / self.n)
        as_int = c.type in ("int", "bool")
        c.min = int(self.lo) if as_int and self.lo is not None else _float(self.lo)
        c.max = int(self.hi) if as_int and self.hi is not None else _float(self.hi)


def _float(x: float | None) -> float | None:
    return None if x is None else float(x)


# -- CSV type inference -----------------------------------------------------------------------
def _as_int(values: Sequence[str]) -> npt.NDArray[np.int64] | None:
    """The values as int64, or None unless each is an optional sign and 1-18 ASCII digits."""
    joined = ",".join(values)
    if joined.translate(_NOT_INT) or joined.count(",") != len(values) - 1:
        return None  # another character, or a comma inside a (quoted) value
    if max(map(len, values)) > _MAX_INT_LEN or not _SIGNS.isdisjoint(values):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = np.fromstring(joined, dtype=np.int64, sep=",")
    except (ValueError, DeprecationWarning):
        return None  # a sign in the middle ("1-2") or a doubled sign
    return out if out.size == len(values) else None


def _as_float(values: Sequence[str]) -> npt.NDArray[np.float64] | None:
    try:
        return np.fromiter(map(float, values), np.float64, len(values))
    except ValueError:
        return None


def _as_dates(values: Sequence[str], unit: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about (but parses) time zones
            np.array(values, dtype=f"datetime64[{unit}]")
    except (ValueError, TypeError, OverflowError):
        return False
    return True


#: per current column type, the types a batch may still have (narrowest first)
_NEXT = {
    "null": ("int", "float", "bool", "date", "datetime"),
    "int": ("int", "float"),
    "float": ("float",),
    "bool": ("bool",),
    "date": ("date", "datetime"),
    "datetime": ("datetime",),
    "string": (),
}


def _infer(values: Sequence[str], current: str) -> tuple[str, npt.NDArray[Any] | None]:
    """The narrowest type, no narrower than ``current``, that fits every (non-null) value."""
    for kind in _NEXT[current]:
        if kind == "int":
            ints = _as_int(values)
            if ints is not None:
                return "int", ints
        elif kind == "float":
            floats = _as_float(values)
            if floats is not None:
                return "float", floats
        elif kind == "bool":
            if _BOOLS.issuperset(values):
                flags = np.fromiter(map(_TRUE.__contains__, values), np.bool_, len(values))
                return "bool", flags.astype(np.int64)
        else:
            lengths = set(map(len, values))
            if kind == "date":
                if lengths == {10} and _as_dates(values, "D"):
                    return "date", None
            elif min(lengths) >= 10 and max(lengths) <= 40 and _as_dates(values, "us"):
                return "datetime", None
    return "string", None


class _Column:
    """A CSV column being summarized."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind = "null"
        self.count = 0
        self.nulls = 0
        self.moments: _Moments | None = _Moments()

    def update(self, values: Sequence[str]) -> None:
        if _NULLS.isdisjoint(values):  # the common case, and faster than filtering
            nonnull = values
        else:
            nonnull = list(itertools.filterfalse(_NULLS.__contains__, values))
        self.nulls += len(values) - len(nonnull)
        if not nonnull or self.kind == "string":
            self.count += len(nonnull)
            return
        self.kind, arr = _infer(nonnull, self.kind)
        if arr is not None and arr.dtype.kind == "f":
            nan = np.isnan(arr)
            if nan.any():  # "-nan" and the like: nulls too
                self.nulls += int(nan.sum())
                arr = arr[~nan]
        self.count += len(nonnull) if arr is None else int(arr.size)
        if self.kind not in NUMERIC_TYPES:
            self.moments = None
        elif arr is not None and arr.size and self.moments is not None:
            self.moments.add(arr)

    def summary(self) -> ColumnSummary:
        c = ColumnSummary(self.name, self.kind, self.count, self.nulls)
        if self.moments is not None and self.kind in NUMERIC_TYPES:
            self.moments.fill(c)
        return c


# -- CSV reading ------------------------------------------------------------------------------
class _Raw(io.RawIOBase):
    """A ``SeekableReader`` as a raw stream, for buffered readers and pyarrow; never closes it."""

    def __init__(self, f: SeekableReader) -> None:
        super().__init__()
        self._f = f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._f.readinto(memoryview(buffer).cast("B")) or 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


def _text_blocks(f: SeekableReader, name: str, block_size: int) -> Iterator[str]:
    """The file as UTF-8 text in pieces that end at a newline (except perhaps the last)."""
    f.seek(0)
    raw = _Raw(f)
    buf = bytearray(block_size)
    view = memoryview(buf)
    carry = b""
    first = True
    decoder_errors = "replace"
    while True:
        n = raw.readinto(view)
        if not n:
            break
        data = carry + view[:n] if carry else bytes(view[:n])
        cut = data.rfind(b"\n") + 1
        if not cut:
            if len(data) > MAX_LINE:
                raise FormatError(f"{name}: a line longer than {MAX_LINE >> 20} MiB")
            carry = data
            continue
        carry = data[cut:]
        text = data[:cut].decode("utf-8", decoder_errors)
        if first:
            text = text.removeprefix("\ufeff")
            first = False
        yield text
    if carry:
        text = carry.decode("utf-8", decoder_errors)
        yield text.removeprefix("\ufeff") if first else text


def _csv_lines(texts: Iterable[str]) -> Iterator[str]:
    """Lines with their endings, split where the csv module splits them (LF, CR, CRLF)."""
    for t in texts:
        yield from io.StringIO(t, newline="")


class _Rebatch:
    """Regroups column lists into batches of exactly ``rows`` rows (the last may be short)."""

    def __init__(self, ncols: int, rows: int) -> None:
        self.ncols, self.rows = ncols, rows
        self.parts: list[Sequence[Sequence[str]]] = []
        self.pending = 0

    def push(self, cols: Sequence[Sequence[str]], n: int) -> Iterator[list[Sequence[str]]]:
        if not n:
            return
        self.parts.append(cols)
        self.pending += n
        if self.pending < self.rows:
            return
        if len(self.parts) == 1:
            merged: list[Sequence[str]] = list(cols)
        else:
            merged = [
                list(itertools.chain.from_iterable(p[j] for p in self.parts))
                for j in range(self.ncols)
            ]
        start, total = 0, self.pending
        while total - start >= self.rows:
            yield [m[start : start + self.rows] for m in merged]
            start += self.rows
        self.pending = total - start
        self.parts = [[m[start:] for m in merged]] if self.pending else []

    def flush(self) -> Iterator[list[Sequence[str]]]:
        if self.pending:
            merged: list[Sequence[str]] = [
                list(itertools.chain.from_iterable(p[j] for p in self.parts))
                for j in range(self.ncols)
            ]
            yield merged
        self.parts, self.pending = [], 0


def _header_names(fields: Sequence[str]) -> list[str]:
    """Column names: blanks become ``column_N``, repeats get ``.1``, ``.2`` (as pandas does)."""
    out: list[str] = []
    seen: set[str] = set()
    for i, raw_name in enumerate(fields):
        base = raw_name or f"column_{i + 1}"
        nm, k = base, 0
        while nm in seen:
            k += 1
            nm = f"{base}.{k}"
        seen.add(nm)
        out.append(nm)
    return out


class _CsvScan:
    """One pass over a CSV file: the fast path splits plain text, the csv module does the rest.

    Blocks without a quote, NUL or bare CR whose lines all have the header's number of
    fields are split with ``str.split``; from the first block that is not like that on, rows
    come from ``csv.reader``. Both give the same fields, regrouped into fixed-size batches.
    """

    def __init__(self, name: str, delimiter: str | None, batch_rows: int | None) -> None:
        self.name = name
        self.delimiter = delimiter
        self.batch_rows = batch_rows
        self.columns: list[_Column] = []
        self.rows = 0
        self.batcher: _Rebatch | None = None

    def _start(self, header: Sequence[str]) -> None:
        self.columns = [_Column(n) for n in _header_names(header)]
        self.batcher = _Rebatch(len(header), self.batch_rows or _batch_rows(len(header)))

    def _feed(self, cols: Sequence[Sequence[str]], n: int) -> None:
        assert self.batcher is not None
        for batch in self.batcher.push(cols, n):
            self._update(batch)

    def _update(self, batch: Sequence[Sequence[str]]) -> None:
        for col, values in zip(self.columns, batch, strict=True):
            col.update(values)

    def run(self, texts: Iterator[str]) -> None:
        """Consume the file's text blocks."""
        for text in texts:
            if self.delimiter is None:
                self.delimiter = _sniff_delimiter(text.partition("\n")[0])
            plain = text.replace("\r\n", "\n") if "\r" in text else text
            if '"' in plain or "\r" in plain or "\0" in plain:
                self._slow(_csv_lines(itertools.chain([text], texts)))
                break
            lines = list(filter(None, plain.split("\n")))
            if self.batcher is None:
                if not lines:
                    continue
                self._start(lines[0].split(self.delimiter))
                lines = lines[1:]
            ncols = len(self.columns)
            per_line = list(map(operator.methodcaller("count", self.delimiter), lines))
            if per_line.count(ncols - 1) != len(per_line):  # ragged: let csv name the row
                self._slow(itertools.chain((s + "\n" for s in lines), _csv_lines(texts)))
                break
            fields = self.delimiter.join(lines).split(self.delimiter) if lines else []
            self._feed([fields[j::ncols] for j in range(ncols)], len(lines))
            self.rows += len(lines)
        if self.batcher is not None:
            for batch in self.batcher.flush():
                self._update(batch)

    def _slow(self, lines: Iterable[str]) -> None:
        """Rows from ``csv.reader`` (quotes, embedded newlines; ragged rows are errors)."""
        assert self.delimiter is not None
        reader = csv.reader(lines, delimiter=self.delimiter)
        rows = filter(None, reader)  # blank lines
        try:
            if self.batcher is None:
                header = next(rows, None)
                if header is None:
                    return
                self._start(header)
            assert self.batcher is not None
            ncols = len(self.columns)
            while True:
                batch = list(itertools.islice(rows, self.batcher.rows))
                if not batch:
                    break
                if len(set(map(len, batch))) != 1 or len(batch[0]) != ncols:
                    i = next(i for i, r in enumerate(batch) if len(r) != ncols)
                    raise FormatError(
                        f"{self.name}: data row {self.rows + i + 1} has {len(batch[i])} "
                        f"field(s), the header has {ncols}"
                    )
                self._feed(list(zip(*batch, strict=True)), len(batch))
                self.rows += len(batch)
        except csv.Error as exc:
            raise FormatError(f"{self.name}: line {reader.line_num}: {exc}") from None


def _batch_rows(ncols: int) -> int:
    return max(MIN_BATCH_ROWS, BATCH_VALUES // max(1, ncols))


def _summarize_csv(
    f: SeekableReader, name: str, fmt: str, block_size: int, batch_rows: int | None
) -> DatasetSummary:
    scan = _CsvScan(name, "\t" if fmt == "tsv" else None, batch_rows)
    scan.run(_text_blocks(f, name, block_size))
    return DatasetSummary(
        name, fmt, scan.rows, [c.summary() for c in scan.columns], scan.delimiter or ","
    )


# -- Parquet ----------------------------------------------------------------------------------
def _arrow_kind(t: Any, pa: Any) -> str:
    """Our type name for an Arrow type."""
    if pa.types.is_dictionary(t):
        return _arrow_kind(t.value_type, pa)
    checks = (
        ("int", pa.types.is_integer),
        ("float", pa.types.is_floating),
        ("float", pa.types.is_decimal),
        ("bool", pa.types.is_boolean),
        ("date", pa.types.is_date),
        ("datetime", pa.types.is_timestamp),
        ("string", pa.types.is_string),
        ("string", pa.types.is_large_string),
        ("null", pa.types.is_null),
    )
    for kind, check in checks:
        if check(t):
            return kind
    return str(t)


def _summarize_parquet(f: SeekableReader, name: str, batch_rows: int | None) -> DatasetSummary:
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise UnsupportedFormatError(
            f"{name}: reading Parquet needs pyarrow (pip install pyarrow)"
        ) from None
    f.seek(0)
    try:
        pf = pq.ParquetFile(_Raw(f))
        schema = pf.schema_arrow
        cols = [
            ColumnSummary(fl.name, _arrow_kind(fl.type, pa), arrow_type=str(fl.type))
            for fl in schema
        ]
        moments = [_Moments() if c.type in NUMERIC_TYPES else None for c in cols]
        rows = 0
        size = batch_rows or _batch_rows(len(cols))
        for batch in pf.iter_batches(batch_size=size):
            rows += batch.num_rows
            for i, c in enumerate(cols):
                arr = batch.column(i)
                c.nulls += arr.null_count
                m = moments[i]
                if m is None:
                    c.count += len(arr) - arr.null_count
                    continue
                if pa.types.is_dictionary(arr.type):
                    arr = arr.dictionary_decode()
                if pa.types.is_decimal(arr.type):
                    arr = pc.cast(arr, pa.float64())
                values = arr.drop_null().to_numpy(zero_copy_only=False)
                if values.dtype.kind == "f":
                    nan = np.isnan(values)
                    if nan.any():
                        c.nulls += int(nan.sum())
                        values = values[~nan]
                elif values.dtype.kind == "b":
                    values = values.astype(np.int64)
                c.count += int(values.size)
                if values.size:
                    m.add(values)
    except (pa.ArrowException, OSError) as exc:  # pyarrow reports bad metadata as OSError
        raise FormatError(f"{name}: unreadable Parquet file: {exc}") from None
    for c, m in zip(cols, moments, strict=True):
        if m is not None:
            m.fill(c)
    return DatasetSummary(name, "parquet", rows, cols)


# -- entry point ------------------------------------------------------------------------------
def summarize(
    f: SeekableReader,
    name: str,
    *,
    block_size: int = BLOCK,
    batch_rows: int | None = None,
) -> DatasetSummary:
    """Schema, row count and column statistics of a CSV, TSV or Parquet file, in one pass.

    Args:
        f: The file (read from the start).
        name: Its path (for the format, by extension, and messages).
        block_size: Bytes read at a time from a CSV file (does not change any result).
        batch_rows: Rows per statistics batch (default: about ``BATCH_VALUES`` values, at
            least ``MIN_BATCH_ROWS`` rows); means and stds may differ in the last bits.

    Returns:
        The summary.

    Raises:
        BadArgumentError: Not a dataset (neither Parquet by content nor CSV/TSV by name).
        FormatError: Malformed data: a ragged CSV row, a damaged Parquet file.
        UnsupportedFormatError: A Parquet file, but pyarrow is not installed.
    """
    fmt = detect_format(f, name)
    if fmt is None:
        raise BadArgumentError(f"{name}: not a dataset (CSV, TSV or Parquet)")
    if fmt == "parquet":
        return _summarize_parquet(f, name, batch_rows)
    return _summarize_csv(f, name, fmt, block_size, batch_rows)
