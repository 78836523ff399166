"""FaultyBackend injects exactly the faults its rules describe; RetryBackend rides them out."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from modelstore.backend import (
    Fault,
    FaultyBackend,
    LocalBackend,
    MemoryBackend,
    RetryBackend,
)
from modelstore.errors import (
    ObjectNotFoundError,
    RefConflictError,
    RepositoryFullError,
    StorageError,
)

pytestmark = pytest.mark.faults


def test_faulty_fails_the_nth_put_only() -> None:
    b = FaultyBackend(MemoryBackend(), [Fault.fail("put", nth=3)])
    b.put("a", b"1")
    b.put("b", b"2")
    with pytest.raises(StorageError, match=r"injected fault in put\('c'\)"):
        b.put("c", b"3")
    b.put("d", b"4")
    assert b.inner.stat("c") is None  # failed before the call: nothing was written
    assert b.rules[0].hits == 1


def test_faulty_raises_the_given_error_instance_repeatedly() -> None:
    err = OSError(5, "Input/output error")
    rule = Fault.fail("get|stat", err, times=2)
    b = FaultyBackend(MemoryBackend(), [rule])
    b.put("k", b"v")
    with pytest.raises(OSError) as info:
        b.get("k")
    assert info.value is err
    with pytest.raises(OSError):
        b.stat("k")
    assert b.get("k") == b"v"
    assert rule.hits == 2


def test_faulty_every_call_from_the_nth_on() -> None:
    b = FaultyBackend(MemoryBackend(), [Fault.fail("delete", nth=2, times=None)])
    b.delete("x")
    for _ in range(5):
        with pytest.raises(StorageError):
            b.delete("x")


def test_faulty_error_after_the_call_means_it_happened() -> None:
    b = FaultyBackend(MemoryBackend(), [Fault.fail("put", after=True)])
    with pytest.raises(StorageError):
        b.put("k", b"v")
    assert b.get("k") == b"v"


def test_faulty_selects_by_key_prefix() -> None:
    b = FaultyBackend(MemoryBackend(), [Fault.fail("*", prefix="packs/", times=None)])
    b.put("refs/main", b"x")
    assert b.get("refs/main") == b"x"
    with pytest.raises(StorageError):
        b.put("packs/p1", b"x")
    with pytest.raises(StorageError):
        b.list("packs/")


def test_faulty_corrupts_the_first_read_of_a_prefix_only() -> None:
    inner = MemoryBackend()
    data = bytes(range(256)) * 4
    inner.put("packs/p1", data)
    inner.put("refs/main", data)
    b = FaultyBackend(inner, [Fault.corrupt_read("packs/")])
    assert b.get("refs/main") == data
    bad = b.get("packs/p1")
    assert len(bad) == len(data) and bad != data
    assert sum(x != y for x, y in zip(bad, data, strict=True)) == 1  # one byte flipped
    assert b.get("packs/p1") == data  # the second read is clean (a retry heals it)


def test_faulty_corrupts_streams_too() -> None:
    inner = MemoryBackend()
    data = b"\x00" * (3 << 20)
    inner.put("p", data)
    b = FaultyBackend(inner, [Fault.corrupt_read(times=None)])
    got = b"".join(b.get_stream("p"))
    assert len(got) == len(data) and got.count(b"\xff") == 1


def test_faulty_short_reads_return_less() -> None:
    inner = MemoryBackend()
    inner.put("k", b"0123456789")
    inner.put("big", b"x" * (3 << 20))
    b = FaultyBackend(inner, [Fault.short_read(times=2)])
    assert b.get("k") == b"01234"
    assert len(b"".join(b.get_stream("big"))) < 3 << 20
    assert b.get("k") == b"0123456789"


def test_faulty_corrupts_what_put_stores() -> None:
    inner = MemoryBackend()
    b = FaultyBackend(inner, [Fault("put", corrupt=True, times=2)])
    b.put("a", b"abcd")
    b.put("s", io.BytesIO(b"abcd"))
    assert inner.get("a") != b"abcd" and inner.get("s") != b"abcd"


def test_faulty_delay_and_callback() -> None:
    seen: list[tuple[str, str]] = []
    b = FaultyBackend(MemoryBackend(), [
        Fault.slow("stat", 0.05),
        Fault("put", callback=lambda m, k: seen.append((m, k))),
    ])
    t = time.monotonic()
    assert b.stat("x") is None
    assert time.monotonic() - t >= 0.05
    b.put("x", b"1")
    assert seen == [("put", "x")]


def test_faulty_callback_can_race_a_cas_writer_in() -> None:
    """The callback runs just before the call: another writer moves the ref first."""
    inner = MemoryBackend()
    base = inner.put("refs/main", b"c1")
    b = FaultyBackend(inner, [
        Fault("put", callback=lambda m, k: inner.put(k, b"theirs", overwrite=True)),
    ])
    with pytest.raises(RefConflictError):
        b.put("refs/main", b"ours", if_match=base.etag)
    assert inner.get("refs/main") == b"theirs"


def test_fault_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown backend method"):
        Fault("push")
    with pytest.raises(ValueError):
        Fault("put", nth=0)


# -- RetryBackend ------------------------------------------------------------------------


def _retrying(rules: list[Fault], attempts: int = 4) -> tuple[RetryBackend, list[float]]:
    sleeps: list[float] = []
    inner = FaultyBackend(MemoryBackend(), rules)
    return RetryBackend(inner, attempts=attempts, base_delay=0.05, sleep=sleeps.append), sleeps


def test_retry_rides_out_transient_storage_errors_with_backoff() -> None:
    r, sleeps = _retrying([Fault.fail("put", times=3)])
    assert r.put("k", b"v").size == 1
    assert r.get("k") == b"v"
    assert sleeps == [0.05, 0.1, 0.2]


def test_retry_gives_up_after_n_attempts_with_the_last_error() -> None:
    rule = Fault.fail("get", times=None)
    r, sleeps = _retrying([rule], attempts=3)
    with pytest.raises(StorageError, match="injected fault"):
        r.get("k")
    assert rule.hits == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    "error", [ObjectNotFoundError, RefConflictError, RepositoryFullError, OSError]
)
def test_retry_does_not_retry_answers_or_full_disks(error: type[Exception]) -> None:
    rule = Fault.fail("stat", error, times=None)
    r, sleeps = _retrying([rule])
    with pytest.raises(error):
        r.stat("k")
    assert rule.hits == 1 and sleeps == []


def test_retry_real_missing_object_is_not_retried() -> None:
    r, sleeps = _retrying([])
    with pytest.raises(ObjectNotFoundError):
        r.get("missing")
    assert sleeps == []


def test_retry_replays_seekable_streams_but_not_pipes() -> None:
    r, _ = _retrying([Fault.fail("put", after=False, times=1)])
    src = io.BytesIO(b"xxpayload")
    src.seek(2)
    r.put("k", src)
    assert r.get("k") == b"payload"

    class Pipe:
        def __init__(self) -> None:
            self.data = io.BytesIO(b"once")

        def read(self, n: int = -1) -> bytes:
            return self.data.read(n)

    rule = Fault.fail("put", times=1)
    r2, sleeps = _retrying([rule])
    with pytest.raises(StorageError):
        r2.put("p", Pipe())
    assert sleeps == []


def test_retry_stream_and_list_until_the_first_item() -> None:
    r, sleeps = _retrying([Fault.fail("get_stream|list", times=2)])
    r.inner.inner.put("a/1", b"one")  # type: ignore[attr-defined]
    assert b"".join(r.get_stream("a/1")) == b"one"
    assert len(sleeps) == 2
    r2, sleeps2 = _retrying([Fault.fail("list", times=2)])
    r2.put("a/1", b"x")
    assert [i.key for i in r2.list("a/")] == ["a/1"]
    assert len(sleeps2) == 2


def test_faulty_corrupt_first_read_over_a_local_disk_then_clean_reads(tmp_path: Path) -> None:
    """restic damageOnceBackend: the caller sees the bad bytes, asks again, gets good ones."""
    inner = LocalBackend(tmp_path / "s")
    inner.put("packs/p", b"good data")
    b = FaultyBackend(inner, [Fault.corrupt_read("packs/")])
    first = b.get("packs/p")
    assert first != b"good data"
    assert b.get("packs/p") == b"good data"


def test_retry_delay_is_capped() -> None:
    sleeps: list[float] = []
    inner = FaultyBackend(MemoryBackend(), [Fault.fail("stat", times=None)])
    r = RetryBackend(inner, attempts=8, base_delay=1.0, max_delay=3.0, sleep=sleeps.append)
    with pytest.raises(StorageError):
        r.stat("k")
    assert sleeps == [1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0]
