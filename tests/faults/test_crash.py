"""Crash survival: ``ms`` killed with SIGKILL at random moments loses nothing and can re-run.

Each trial (``tests/faults/crash_harness.py``) kills one real ``ms`` process (add, commit,
checkout in place and ``--to``, a three-way merge, push to a directory remote and to ``ms
serve``, fetch, gc) after a seeded random share of its measured duration, then checks that
``ms verify --read-data`` is clean, that every committed version reads back byte-identical, and
that re-running the same command succeeds with exactly the unkilled run's result.

Twenty trials run by default (a fixed list spread over the operations); ``-m slow`` runs 243
more, one seed each. Reproduce one with its seed: ``pytest -m slow tests/faults/test_crash.py
-k add-seed-171`` (a failure prints seed, operation and delay).

Exact crash points complement the random ones: ``ms`` kills itself on the nth call of a given
function (between a clean merge's two transactions, in the middle of a file a checkout writes,
...), so the states that once made a re-run fail are reached every time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelstore import Repository
from modelstore.repository import TMP_MARK
from tests.faults.crash_harness import (
    OPS,
    Outcome,
    Templates,
    Trial,
    run_crash_point,
    run_trial,
    serving,
)

pytestmark = pytest.mark.faults

ORDER = ["add", "commit", "checkout", "checkout-to", "merge", "push", "fetch", "gc", "push-serve"]
assert sorted(ORDER) == sorted(OPS)

#: the default suite: (op, seed), twenty trials, every operation at least once
DEFAULT = [
    ("add", 1001), ("add", 1002),
    ("commit", 1003), ("commit", 1004),
    ("checkout", 1005), ("checkout", 1006), ("checkout", 1007),
    ("checkout-to", 1008), ("checkout-to", 1009),
    ("merge", 1010), ("merge", 1011), ("merge", 1012),
    ("push", 1013), ("push", 1014), ("push-serve", 1015),
    ("fetch", 1016), ("fetch", 1017),
    ("gc", 1018), ("gc", 1019), ("gc", 1020),
]
#: the slow suite: 243 seeds, the operation chosen by the seed
SLOW = [(ORDER[s % len(ORDER)], s) for s in range(243)]


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    """One template per operation, and ``ms serve`` for push-serve, for the whole module."""
    home = tmp_path_factory.mktemp("crash-home")
    with pytest.MonkeyPatch.context() as mp:  # what ``clean_env`` does, for module scope
        for k in list(os.environ):
            if k.startswith("MS_"):
                mp.delenv(k)
        mp.setenv("HOME", str(home))
        mp.setenv("XDG_CONFIG_HOME", str(home / ".config"))
        mp.setenv("MS_AUTHOR", "tester@example")
        mp.setenv("MS_LOCK_TIMEOUT", "5")
        with serving(tmp_path_factory.mktemp("crash-serve")):
            yield Templates(tmp_path_factory.mktemp("crash-templates"))


def _trial(templates: Templates, op: str, seed: int, tmp_path: Path) -> Outcome:
    out = run_trial(templates, op, seed, tmp_path)
    print(f"{out.where()} re-run exit {out.rerun_code}, {out.seconds:.1f}s")
    return out


@pytest.mark.parametrize(("op", "seed"), DEFAULT, ids=[f"{o}-seed-{s}" for o, s in DEFAULT])
def test_killed_operation_loses_nothing_and_reruns(
    templates: Templates, op: str, seed: int, tmp_path: Path
) -> None:
    _trial(templates, op, seed, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(("op", "seed"), SLOW, ids=[f"{o}-seed-{s}" for o, s in SLOW])
def test_killed_operation_loses_nothing_and_reruns_slow(
    templates: Templates, op: str, seed: int, tmp_path: Path
) -> None:
    _trial(templates, op, seed, tmp_path)


# -- exact crash points ----------------------------------------------------------------------------


def _merge_in_progress(t: Trial) -> None:
    with Repository.open(t.repo) as r:
        state = r.merge_state()
        assert state is not None and state.kind == "merge" and not state.conflicts
        assert r.status().merging == "merge"


def _temp_file_left_and_hidden(t: Trial) -> None:
    """The killed writer's temporary file is there, but status and ``add .`` never list it."""
    root = t.root / "out" if (t.root / "out").exists() else t.repo
    temps = [p for p in root.rglob(f"*{TMP_MARK}*") if ".ms" not in p.parts]
    assert temps, "the kill should have left a partly written temporary file"
    if root == t.repo:
        with Repository.open(t.repo) as r:
            assert not [p for p in r.status().untracked if TMP_MARK in p]


#: (operation, function whose nth call kills the process, n, what the kill interrupts, a check
#: of the state it leaves, slow)
POINTS = [
    ("merge", "modelstore.repository:Repository.commit", 1,
     "between the clean merge's two transactions", _merge_in_progress, False),
    ("merge", "modelstore.fileio:DirectFileWriter.write", 400,
     "writing a merged file", _temp_file_left_and_hidden, False),
    ("checkout", "modelstore.fileio:DirectFileWriter.write", 300,
     "writing a file", _temp_file_left_and_hidden, False),
    ("checkout", "modelstore.repository:Repository._unlink_tracked", 2,
     "removing files the target lacks", None, False),
    ("checkout-to", "modelstore.fileio:DirectFileWriter.write", 500,
     "writing a file", _temp_file_left_and_hidden, False),
    ("add", "modelstore.chunkstore:ChunkStore._commit_pack", 20,
     "indexing packs", None, True),
    ("gc", "modelstore.gc:_unlink_all", 1,
     "after gc's transaction, before deleting files", None, True),
]


@pytest.mark.parametrize(("op", "where", "nth", "what", "after_kill"), [
    pytest.param(*p[:5], id=f"{p[0]}-{str(p[3]).replace(' ', '-')}",
                 marks=[pytest.mark.slow] if p[5] else [])
    for p in POINTS
])
def test_killed_at_an_exact_point_loses_nothing_and_reruns(
    templates: Templates, op: str, where: str, nth: int, what: str,
    after_kill: Callable[[Trial], None] | None, tmp_path: Path,
) -> None:
    run_crash_point(templates, op, where, nth, tmp_path, after_kill)
