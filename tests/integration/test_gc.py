"""``gc``: unreachable data goes, reachable data never does, readers beside it survive."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from modelstore.cli.main import main

from modelstore import Repository, api
from modelstore.errors import LockTimeoutError, RefNotFoundError
from modelstore.gc import GcResult
from modelstore.lock import RepoLock
from modelstore.objects import Tag
from modelstore.pack import PackWriter
from modelstore.verify import verify
from tests.conftest import SMALL_CHUNKS, make_data

NOW = "0"  # no grace period: the tests decide what is old


def put(r: Repository, name: str, data: bytes) -> None:
    (r.workdir / name).parent.mkdir(parents=True, exist_ok=True)
    (r.workdir / name).write_bytes(data)
    r.add([str(r.workdir / name)])


def commit(r: Repository, name: str, data: bytes, msg: str) -> bytes:
    put(r, name, data)
    return r.commit(msg)


def read(r: Repository, rev: str, path: str) -> bytes:
    out = io.BytesIO()
    r.cat(rev, path, out)
    return out.getvalue()


def indexed(r: Repository) -> set[bytes]:
    with r.db.read() as txn:
        return set(txn.keys("chunks"))


def chunks_of(r: Repository, rev: str, path: str) -> set[bytes]:
    return {c for c, _ in r.manifest_chunks(r.file_manifest(rev, path))}


def pack_files(r: Repository) -> set[str]:
    return {p.name for p in (r.ms_dir / "packs").rglob("*.pack")}


def test_deleted_branch_is_reclaimed_and_shared_chunks_stay(repo: Repository) -> None:
    shared = make_data(60_000, 1)
    commit(repo, "shared.bin", shared, "base")
    api.switch(repo, "exp", create=True)
    unique = make_data(80_000, 2)
    commit(repo, "unique.bin", unique, "experiment")
    commit(repo, "shared.bin", shared[:30_000] + b"edit" + shared[30_000:], "edit shared")
    gone = chunks_of(repo, "exp", "unique.bin") | chunks_of(repo, "exp", "shared.bin")
    keep = chunks_of(repo, "main", "shared.bin")
    assert keep & gone  # the edit shares most chunks with main's version
    api.switch(repo, "main")
    api.branch_delete(repo, "exp", force=True)

    # the reflog still protects the branch's commits for 90 days by default
    assert api.gc(repo, prune_older_than=NOW).chunks_dropped == 0
    assert read(repo, "exp@{1}", "unique.bin") == unique

    res = api.gc(repo, prune_older_than=NOW, expire_reflog="now")
    assert res.chunks_dropped == len(gone - keep) and res.objects_dropped >= 5
    assert res.bytes_reclaimed > 60_000 and res.packs_deleted >= 1
    assert indexed(repo) == keep
    assert read(repo, "main", "shared.bin") == shared
    assert verify(repo, read_data=True).ok
    with pytest.raises(RefNotFoundError, match="garbage-collected"):
        repo.resolve("exp@{1}")


def test_sparse_pack_is_rewritten_and_everything_reachable_reads_back(tmp_path: Path) -> None:
    r = Repository.init(tmp_path / "w", chunker=SMALL_CHUNKS, pack_size=1 << 20)
    big, small = make_data(600_000, 3), make_data(100_000, 4)
    (r.workdir / "big.bin").write_bytes(big)
    (r.workdir / "small.bin").write_bytes(small)
    r.add([str(r.workdir)])  # one add: both files in one pack
    (old_pack,) = pack_files(r)
    r.rm([str(r.workdir / "big.bin")])  # unstaged before any commit: garbage
    r.commit("small only")

    assert (
        api.gc(r, prune_older_than=NOW, expire_reflog="now", repack_threshold=0).packs_rewritten
        == 0
    )
    dry = api.gc(r, prune_older_than=NOW, expire_reflog="now", dry_run=True)
    res = api.gc(r, prune_older_than=NOW, expire_reflog="now")
    assert (res.packs_rewritten, res.packs_written, res.packs_deleted) == (1, 1, 0)
    assert dry.bytes_reclaimed == res.bytes_reclaimed > 500_000
    assert 100_000 <= res.bytes_repacked < 110_000
    (new_pack,) = pack_files(r)
    assert new_pack != old_pack
    assert read(r, "HEAD", "small.bin") == small
    assert verify(r, read_data=True).ok
    assert api.gc(r, prune_older_than=NOW, expire_reflog="now").packs_rewritten == 0
    r.close()


def test_grace_period_keeps_young_garbage(repo: Repository) -> None:
    commit(repo, "m.bin", make_data(50_000, 5), "v1")
    put(repo, "m.bin", make_data(50_000, 6))  # staged, then replaced before any commit
    with repo.db.read() as txn:
        staged = repo._index(txn)["m.bin"].manifest_id
    orphan = {c for c, _ in repo.manifest_chunks(repo.get_manifest(staged))}
    put(repo, "m.bin", make_data(50_000, 7))
    repo.commit("v2")

    young = api.gc(repo)  # default grace: 1 hour
    assert young.packs_kept_young >= 1 and young.chunks_dropped == 0
    assert orphan <= indexed(repo)
    old = api.gc(repo, prune_older_than="0")
    assert old.chunks_dropped == len(orphan) and not orphan & indexed(repo)
    assert verify(repo, read_data=True).ok


def test_reflog_expiry_keeps_the_log_and_names_collected_entries(repo: Repository) -> None:
    v1 = commit(repo, "m.bin", make_data(40_000, 8), "v1")
    v2 = commit(repo, "m.bin", make_data(40_000, 9), "v2")
    api.reset(repo, "HEAD~1", "hard")
    with repo.db.read() as txn:
        entries = len(txn.keys("reflog"))
    assert api.gc(repo, prune_older_than=NOW, expire_reflog="1d").objects_dropped == 0
    assert repo.resolve("main@{1}") == v2
    res = api.gc(repo, prune_older_than=NOW, expire_reflog="never")
    assert res.objects_dropped == 0 and res.reflog_entries_expired == 0

    res = api.gc(repo, prune_older_than=NOW, expire_reflog="now")
    assert res.objects_dropped == 3 and res.reflog_entries_expired == entries
    with repo.db.read() as txn:
        assert len(txn.keys("reflog")) == entries  # entries are never deleted
    with pytest.raises(RefNotFoundError, match=f"{v2.hex()[:12]}, which was garbage-collected"):
        repo.resolve("main@{1}")
    assert repo.resolve("main@{0}") == v1
    assert verify(repo).ok  # the hash chains are intact; expired ids are not walked


def test_staging_index_protects_staged_files(repo: Repository) -> None:
    commit(repo, "a.bin", make_data(20_000, 10), "a")
    staged = make_data(70_000, 11)
    put(repo, "new.bin", staged)
    res = api.gc(repo, prune_older_than=NOW, expire_reflog="now")
    assert res.chunks_dropped == 0 and res.objects_dropped == 0
    repo.commit("now committed")
    assert read(repo, "HEAD", "new.bin") == staged


def test_tags_aliases_remote_refs_and_merges_protect(repo: Repository, tmp_path: Path) -> None:
    data = {n: make_data(30_000, 20 + n) for n in range(5)}
    base = commit(repo, "base.bin", make_data(10_000, 19), "base")
    ids = {}
    for n, name in enumerate(["tagged", "light", "aliased", "pushed"]):
        api.switch(repo, name, create=True, start=base.hex())
        ids[name] = commit(repo, f"{name}.bin", data[n], name)
    api.tag_create(repo, "v1", "tagged", message="release")
    api.tag_create(repo, "v0", "light")
    api.alias_set(repo, "production", "aliased")
    api.remote_add(repo, "origin", str(tmp_path / "remote"))
    api.push(repo, "origin", ["pushed"])  # leaves refs/remotes/origin/pushed
    api.switch(repo, "main")
    for name in ids:
        api.branch_delete(repo, name, force=True)
    # a merge stopped on a conflict: its other side is a root too
    api.switch(repo, "side", create=True)
    commit(repo, "c.txt", b"theirs\n", "theirs")
    api.switch(repo, "main")
    commit(repo, "c.txt", b"ours\n", "ours")
    assert api.merge(repo, "side").conflicts
    api.branch_delete(repo, "side", force=True)

    res = api.gc(repo, prune_older_than=NOW, expire_reflog="now")
    assert res.objects_dropped == 0 and res.chunks_dropped == 0
    assert read(repo, "v1", "tagged.bin") == data[0]
    assert read(repo, "v0", "light.bin") == data[1]
    assert read(repo, "@production", "aliased.bin") == data[2]
    assert read(repo, "origin/pushed", "pushed.bin") == data[3]
    api.merge_resolve(repo, str(repo.workdir / "c.txt"), side="theirs")
    repo.commit("merged")
    assert read(repo, "HEAD", "c.txt") == b"theirs\n"
    assert verify(repo, read_data=True).ok


def _snapshot(
    r: Repository,
) -> tuple[dict[str, tuple[int, int]], dict[str, list[tuple[bytes, bytes]]]]:
    files = {
        str(p.relative_to(r.ms_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in r.ms_dir.rglob("*")
        # LMDB's files are compared by content; the lock file's note changes with any hold
        if p.is_file() and p.parent.name != "meta" and p.name != "lock"
    }
    with r.db.read() as txn:
        db = {
            n: txn.items(n)
            for n in ("meta", "objects", "chunks", "packs", "refs", "index", "reflog", "remote")
        }
    return files, db


def test_dry_run_changes_nothing_and_predicts_the_real_run(tmp_path: Path) -> None:
    r = Repository.init(tmp_path / "w", chunker=SMALL_CHUNKS, pack_size=64 << 10)
    (r.workdir / "keep.bin").write_bytes(make_data(50_000, 30))
    (r.workdir / "drop.bin").write_bytes(make_data(120_000, 31))
    r.add([str(r.workdir)])
    r.rm([str(r.workdir / "drop.bin")])
    r.commit("keep one")
    (r.ms_dir / "tmp" / "stale.pack.tmp").write_bytes(b"x" * 1000)
    os.utime(r.ms_dir / "tmp" / "stale.pack.tmp", (1, 1))
    before = _snapshot(r)
    dry = api.gc(r, prune_older_than=NOW, expire_reflog="now", dry_run=True)
    assert _snapshot(r) == before
    assert dry.dry_run and dry.chunks_dropped > 0 and dry.bytes_reclaimed > 100_000
    real = api.gc(r, prune_older_than=NOW, expire_reflog="now")
    assert _snapshot(r) != before
    for field in (
        "objects_dropped",
        "chunks_dropped",
        "packs_deleted",
        "packs_rewritten",
        "packs_written",
        "debris_files",
        "bytes_repacked",
    ):
        assert getattr(dry, field) == getattr(real, field), field
    assert abs(dry.bytes_reclaimed - real.bytes_reclaimed) < 200  # new pack size estimated
    r.close()


def test_crash_debris_and_tmp_files_are_removed_when_old(repo: Repository) -> None:
    commit(repo, "m.bin", make_data(30_000, 40), "m")
    store = repo.store
    debris = []
    for seed in (41, 42):  # packs renamed into place, then a crash before their transaction
        w = PackWriter(store.tmp_dir, f"crash{seed}")
        w.add(os.urandom(32), 0, make_data(5_000, seed), 5_000)
        _, path = w.finish(store.packs_dir)
        debris.append(path)
    os.utime(debris[0], (1, 1))
    (store.tmp_dir / "old.pack.tmp").write_bytes(b"x")
    os.utime(store.tmp_dir / "old.pack.tmp", (1, 1))
    (store.tmp_dir / "push-123").mkdir()
    (store.tmp_dir / "push-123" / "p.pack").write_bytes(b"y" * 10)
    os.utime(store.tmp_dir / "push-123", (1, 1))
    (store.tmp_dir / "young.pack.tmp").write_bytes(b"z")

    old_size = debris[0].stat().st_size
    res = api.gc(repo)  # the default hour of grace: only old leftovers go
    assert res.debris_files == 3 and res.bytes_reclaimed == old_size + 1 + 10
    assert not debris[0].exists() and debris[1].exists()
    assert sorted(p.name for p in store.tmp_dir.iterdir()) == ["young.pack.tmp"]
    assert api.gc(repo, prune_older_than="0").debris_files == 2
    assert not debris[1].exists() and verify(repo, read_data=True).ok


READER_AFTER_GC = r"""
import sys
from modelstore import api
print(api.gc(sys.argv[1], prune_older_than="0", expire_reflog="now").packs_rewritten)
"""


def test_a_reader_holding_old_locations_survives_gc_in_another_process(tmp_path: Path) -> None:
    r = Repository.init(tmp_path / "w", chunker=SMALL_CHUNKS, pack_size=1 << 20)
    keep = make_data(200_000, 50)
    (r.workdir / "big.bin").write_bytes(make_data(800_000, 51))
    (r.workdir / "keep.bin").write_bytes(keep)
    r.add([str(r.workdir)])
    r.rm([str(r.workdir / "big.bin")])
    r.commit("keep only")
    ids = [c for c, _ in r.manifest_chunks(r.file_manifest("HEAD", "keep.bin"))]
    stream = r.iter_file(r.file_manifest("HEAD", "keep.bin"))
    head = next(stream)  # a read in flight: it holds the old pack open
    fresh = Repository.open(r.workdir)  # another reader, with no pack open yet
    with fresh.db.read() as txn:  # an old snapshot held open across the gc
        old = [fresh.store.locate(txn, c) for c in ids]
        proc = subprocess.run(
            [sys.executable, "-c", READER_AFTER_GC, str(r.workdir)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "1"
        assert old[0] is not None and not r.store.pack_path(old[0].pack_id).exists()
        got = []
        for cid, loc in zip(ids, old, strict=True):
            assert loc is not None
            found = fresh.store.read_current(cid, loc)
            assert found is not None and found[1].pack_id != loc.pack_id
            got.append(fresh.store.decode_verified(cid, found[1], found[0]))
    assert b"".join(got) == keep
    assert read(fresh, "HEAD", "keep.bin") == keep
    fresh.close()
    assert head + b"".join(stream) == keep
    assert read(r, "HEAD", "keep.bin") == keep
    r.close()


def test_gc_waits_for_the_writer_lock_and_fetch_takes_it(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit(repo, "m.bin", b"m", "m")
    api.remote_add(repo, "origin", str(tmp_path / "remote"))
    api.push(repo)
    monkeypatch.setenv("MS_LOCK_TIMEOUT", "0.2")
    other = RepoLock(repo.ms_dir / "lock", timeout=0)  # another holder (flocks conflict)
    with other:
        with pytest.raises(LockTimeoutError):
            api.gc(repo.workdir)
        with pytest.raises(LockTimeoutError):
            api.fetch(repo.workdir)
    assert api.fetch(repo).up_to_date


def test_the_lock_is_per_thread_within_one_repository(repo: Repository) -> None:
    repo.lock.timeout = 0.2
    errors: list[BaseException] = []
    with repo.lock:

        def other() -> None:
            try:
                repo.lock.acquire()
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        with repo.lock:  # the holding thread re-enters
            pass
    assert len(errors) == 1 and isinstance(errors[0], LockTimeoutError)
    with repo.lock:
        pass


def test_cli_summary_json_and_bad_durations(
    repo: Repository, capsys: pytest.CaptureFixture[str]
) -> None:
    commit(repo, "m.bin", make_data(30_000, 60), "v1")
    commit(repo, "m.bin", make_data(30_000, 61), "v2")
    api.reset(repo, "HEAD~1", "hard")
    w = str(repo.workdir)
    capsys.readouterr()
    assert (
        main(["-C", w, "gc", "--dry-run", "--prune-older-than", "0", "--expire-reflog", "now"]) == 0
    )
    out = capsys.readouterr().out.strip()
    assert out.startswith("gc (dry run): would drop 3 object(s),") and "would reclaim" in out
    assert len(out.splitlines()) == 1
    assert (
        main(["-C", w, "gc", "--prune-older-than", "now", "--expire-reflog", "now", "--json"]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["objects_dropped"] == 3 and doc["bytes_reclaimed"] > 0 and doc["dry_run"] is False
    assert main(["-C", w, "gc", "-q"]) == 0
    assert capsys.readouterr().out.startswith("gc: dropped 0 object(s), 0 chunk(s), 0 pack(s)")
    for args, what in (
        (["--prune-older-than", "2 weeks"], "grace period"),
        (["--expire-reflog", "soon"], "reflog expiry"),
        (["--prune-older-than", "never"], "grace period"),
    ):
        assert main(["-C", w, "gc", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"ms: error: bad {what}") and len(err.splitlines()) == 1
    assert main(["-C", w, "gc", "--repack-threshold", "1.5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err


# -- never deletes anything reachable: random histories ------------------------------------

PIECES = [make_data(6_000, 100 + i) for i in range(12)]  # shared between files: shared chunks


def _blob(rng: random.Random) -> bytes:
    pieces = b"".join(rng.choice(PIECES) for _ in range(rng.randint(1, 5)))
    return pieces + rng.randbytes(rng.randint(1, 3000))


def _expected(r: Repository, with_reflog: bool) -> tuple[dict[bytes, dict[str, bytes]], set[bytes]]:
    """Every commit a root reaches with its files' bytes, and every chunk they and the index use."""
    from modelstore import refs as refs_mod
    from modelstore.objects import decode_object
    from modelstore.reflog import ReflogEntry

    with r.db.read() as txn:
        tips = [oid for _, oid, _ in refs_mod.list_refs(txn) if oid is not None]
        _, head = refs_mod.resolve_ref(txn, "HEAD")
        tips += [head] if head else []
        if with_reflog:
            for _, v in txn.items("reflog"):
                e = ReflogEntry.decode(v)
                tips += [x for x in (e.old, e.new) if x is not None]
        peeled = []
        for t in tips:
            obj = decode_object(txn.get("objects", t), expect_id=t)  # type: ignore[arg-type]
            peeled.append(obj.target if isinstance(obj, Tag) else t)
        staged = [r._index(txn)[p].manifest_id for p in r._index(txn)]
    commits: dict[bytes, dict[str, bytes]] = {}
    stack = peeled
    while stack:
        c = stack.pop()
        if c in commits:
            continue
        commits[c] = {p: read(r, c.hex(), p) for p in r.commit_files(c)}
        stack.extend(r.get_commit(c).parents)
    chunks = set()
    manifests = {e.id for c in commits for e in r.commit_files(c).values()} | set(staged)
    for m in manifests:
        chunks |= {cid for cid, _ in r.manifest_chunks(r.get_manifest(m))}
    return commits, chunks


def _history(work: Path, seed: int) -> GcResult:
    """A random history (branches, deletions, resets, tags, aliases, staging), then a gc.

    Checks that every commit a root reaches reads back byte-identical, the index holds
    exactly the chunks the roots use, verify is clean and a second gc finds nothing.
    """
    rng = random.Random(seed)
    r = Repository.init(work, chunker=SMALL_CHUNKS, pack_size=rng.choice([8 << 10, 24 << 10]))
    branches = ["main"]
    files: list[str] = []
    commit(r, "f0.bin", _blob(rng), "root")
    files.append("f0.bin")
    ops = ["commit"] * 4 + [
        "branch",
        "switch",
        "delete",
        "reset",
        "reset",
        "tag",
        "alias",
        "rm",
        "stage",
    ]
    for step in range(24):
        op = rng.choice(ops)
        current, _ = r.head()
        if op == "commit":  # one to three files in one add, so packs mix files
            names = {rng.choice([*files, f"f{step}.bin"]) for _ in range(rng.randint(1, 3))}
            for name in names:
                (r.workdir / name).write_bytes(_blob(rng))
            r.add([str(r.workdir / n) for n in names])
            r.commit(f"step {step}")
            files = sorted(set(files) | names)
        elif op == "branch":
            api.branch_create(r, f"b{step}")
            branches.append(f"b{step}")
        elif op == "switch" and len(branches) > 1:
            api.switch(r, rng.choice([b for b in branches if b != current]), force=True)
            files = sorted(r.commit_files(r.resolve("HEAD")))
        elif op == "delete" and len(branches) > 1:
            victim = rng.choice([b for b in branches if b != current])
            api.branch_delete(r, victim, force=True)
            branches.remove(victim)
        elif op == "reset" and r.get_commit(r.resolve("HEAD")).parents:
            api.reset(r, "HEAD~1", "hard")
            files = sorted(r.commit_files(r.resolve("HEAD")))
        elif op == "tag":
            api.tag_create(r, f"t{step}", message="m" if rng.random() < 0.5 else None)
            if rng.random() < 0.3:
                api.tag_delete(r, f"t{step}")
        elif op == "alias":
            api.alias_set(r, rng.choice(["prod", "staging"]), "HEAD")
        elif op == "rm" and len(files) > 1:
            victim = rng.choice(files)
            r.rm([str(r.workdir / victim)])
            r.commit(f"rm {victim}")
            files.remove(victim)
        elif op == "stage":
            put(r, rng.choice(files), _blob(rng))  # staged, maybe replaced before a commit
    put(r, "staged-only.bin", _blob(rng))
    staged = (r.workdir / "staged-only.bin").read_bytes()
    keep_reflog = rng.random() < 0.25
    expire = "never" if keep_reflog else "now"
    threshold = rng.choice([0.5, 0.5, 1.0, 0.0])
    commits, chunks = _expected(r, keep_reflog)
    res = api.gc(r, prune_older_than=NOW, expire_reflog=expire, repack_threshold=threshold)
    assert indexed(r) == chunks  # nothing unreachable is left, nothing reachable is gone
    assert res.live_chunks == len(chunks)
    for c, tree in commits.items():
        for path, data in tree.items():
            assert read(r, c.hex(), path) == data
    rep = verify(r, read_data=True)
    assert rep.ok, rep.problems
    again = api.gc(r, prune_older_than=NOW, expire_reflog=expire, repack_threshold=threshold)
    assert again.objects_dropped == again.chunks_dropped == again.bytes_reclaimed == 0
    assert again.packs_deleted == again.packs_rewritten == 0
    r.commit("staged")
    assert read(r, "HEAD", "staged-only.bin") == staged
    r.close()
    return res


def test_random_histories_lose_nothing_reachable(tmp_path: Path) -> None:
    results = [_history(tmp_path / f"s{seed}", seed) for seed in range(8)]
    # the histories exercise every path: dropping, deleting whole packs, rewriting sparse ones
    assert sum(r.chunks_dropped for r in results) > 0
    assert sum(r.packs_deleted for r in results) > 0
    assert sum(r.packs_rewritten for r in results) > 0
    assert all(r.bytes_reclaimed > 0 for r in results if r.chunks_dropped)
