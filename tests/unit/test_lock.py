"""lock: the flock-based writer lock; timeouts name the holder, a dead holder frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelstore.errors import LockTimeoutError
from modelstore.lock import DEFAULT_LOCK_TIMEOUT, RepoLock

HOLDER = """
import sys, time
from pathlib import Path
from modelstore.lock import RepoLock
lock = RepoLock(Path(sys.argv[1]), timeout=5)
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A separate process that holds the lock on tmp_path/lock until killed."""
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "locked"
        yield p
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        if p.stdout:
            p.stdout.close()


def test_lock_acquire_release(tmp_path):
    lock = RepoLock(tmp_path / "lock", timeout=1)
    with lock:
        text = (tmp_path / "lock").read_text()
        assert text.startswith(f"pid {os.getpid()} (")
    assert (tmp_path / "lock").read_text() == ""  # the holder note is cleared on release
    with RepoLock(tmp_path / "lock", timeout=0):
        pass


def test_lock_reentrant_per_object(tmp_path):
    lock = RepoLock(tmp_path / "lock", timeout=0.2)
    with lock, lock:
        pass
    with RepoLock(tmp_path / "lock", timeout=0):  # fully released after the outermost exit
        pass


def test_lock_release_without_acquire_is_harmless(tmp_path):
    RepoLock(tmp_path / "lock").release()


def test_lock_second_object_in_process_times_out(tmp_path):
    # flock locks belong to the open file description, so two RepoLocks conflict
    first = RepoLock(tmp_path / "lock", timeout=1)
    with first:
        second = RepoLock(tmp_path / "lock", timeout=0.2)
        t0 = time.monotonic()
        with pytest.raises(LockTimeoutError) as ei:
            second.acquire()
        assert time.monotonic() - t0 >= 0.2
        msg = str(ei.value)
        assert f"pid {os.getpid()}" in msg and "0.2s" in msg and "MS_LOCK_TIMEOUT" in msg
        assert "\n" not in msg
        assert ei.value.exit_code == 11
    with second:  # the failed attempt left nothing behind
        pass


def test_lock_timeout_names_holder_process(tmp_path, holder):
    with pytest.raises(LockTimeoutError, match=f"locked by pid {holder.pid} "):
        RepoLock(tmp_path / "lock", timeout=0.3).acquire()


def test_lock_waits_for_release(tmp_path):
    import threading

    first = RepoLock(tmp_path / "lock")
    first.acquire()
    timer = threading.Timer(0.2, first.release)
    timer.start()
    try:
        with RepoLock(tmp_path / "lock", timeout=5):
            pass
    finally:
        timer.join()


def test_lock_released_when_holder_is_killed(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = RepoLock(tmp_path / "lock", timeout=5)
    t0 = time.monotonic()
    with lock:
        assert (tmp_path / "lock").read_text().startswith(f"pid {os.getpid()} ")
    assert time.monotonic() - t0 < 2


def test_lock_timeout_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MS_LOCK_TIMEOUT", "0.25")
    assert RepoLock(tmp_path / "lock").timeout == 0.25
    monkeypatch.delenv("MS_LOCK_TIMEOUT")
    assert RepoLock(tmp_path / "lock").timeout == DEFAULT_LOCK_TIMEOUT
    assert RepoLock(tmp_path / "lock", timeout=3).timeout == 3


def test_lock_works_when_the_holder_note_cannot_be_written(tmp_path, monkeypatch):
    import errno

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    lock = RepoLock(tmp_path / "lock", timeout=0.2)
    with lock:
        with pytest.raises(LockTimeoutError, match="another process"):
            RepoLock(tmp_path / "lock", timeout=0.1).acquire()
    with RepoLock(tmp_path / "lock", timeout=0):
        pass
