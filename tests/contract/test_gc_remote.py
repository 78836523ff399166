"""``gc --remote`` on a directory, S3 (a moto server) and ``ms serve``: garbage goes, data stays."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from modelstore import Repository, api
from modelstore import sync as _sync
from modelstore.backend import Backend, open_backend
from modelstore.gc import collect_remote
from modelstore.verify import verify
from tests.conftest import SMALL_CHUNKS, make_data


@pytest.fixture(params=["dir", "s3", "serve"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    if request.param == "dir":
        return str(tmp_path / "remote"), {}
    if request.param == "serve":
        from tests.contract.conftest import WRITE_TOKEN

        return request.getfixturevalue("serve_repo_url"), {"token": WRITE_TOKEN}
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/team/models", {"endpoint_url": endpoint}


def test_backends_report_when_objects_were_written(backend: Backend) -> None:
    t0 = time.time()
    backend.put("misc/x", b"x")
    listed = {i.key: i for i in backend.list("misc/")}["misc/x"]
    stat = backend.stat("misc/x")
    assert stat is not None and (stat.key, stat.size) == (listed.key, listed.size)
    for info in (listed, stat):
        assert info.mtime is not None and abs(info.mtime - t0) < 60


def _repo(tmp_path: Path, name: str, url: str, opts: dict[str, str]) -> Repository:
    r = Repository.init(tmp_path / name, chunker=SMALL_CHUNKS, pack_size=32 << 10)
    api.remote_add(r, "origin", url, **opts)
    return r


def _commit(r: Repository, name: str, data: bytes) -> bytes:
    (r.workdir / name).write_bytes(data)
    r.add([str(r.workdir / name)])
    return r.commit(name)


def _drop_remote_branch(url: str, opts: dict[str, str], branch: str) -> None:
    """Delete a branch on the remote behind ms's back (as another tool or a force push would)."""
    open_backend(url, **opts).delete(_sync._ref_key(f"refs/heads/{branch}"))


def test_gc_remote_deletes_unreachable_data_only_after_the_grace_period(
    remote: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, opts = remote
    a = _repo(tmp_path, "a", url, opts)
    main_data, exp_data = make_data(80_000, 1), make_data(90_000, 2)
    _commit(a, "m.bin", main_data)
    api.push(a)
    api.switch(a, "exp", create=True)
    _commit(a, "e.bin", exp_data)
    api.push(a, "origin", ["exp"])
    _drop_remote_branch(url, opts, "exp")

    young = api.gc(a, remote="origin")  # 14 days of grace: the exp data is far too young
    assert young.bundles_deleted == young.packs_deleted == young.bytes_reclaimed == 0
    dry = api.gc(a, remote="origin", prune_older_than="0", dry_run=True)
    res = api.gc(a, remote="origin", prune_older_than="0")
    assert res.bundles_deleted == dry.bundles_deleted == 1
    assert res.packs_deleted == dry.packs_deleted >= 2
    assert res.bytes_reclaimed == dry.bytes_reclaimed > 90_000
    assert api.gc(a, remote="origin", prune_older_than="0").bytes_reclaimed == 0

    b = api.clone(url, str(tmp_path / "b"), options=opts)
    assert (b.workdir / "m.bin").read_bytes() == main_data
    assert verify(b, read_data=True).ok
    # the pusher's cache forgot what gc deleted: pushing exp again sends its data again
    again = api.push(a, "origin", ["exp"])
    assert again.packs >= 1 and again.objects >= 3
    c = api.clone(url, str(tmp_path / "c"), branch="exp", options=opts)
    assert (c.workdir / "e.bin").read_bytes() == exp_data and verify(c, read_data=True).ok
    for r in (a, b, c):
        r.close()


def test_gc_remote_marks_again_when_refs_move_before_it_deletes(
    remote: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """A push lands during gc and names data gc had found unreachable: nothing of it goes."""
    url, opts = remote
    a = _repo(tmp_path, "a", url, opts)
    _commit(a, "m.bin", make_data(40_000, 3))
    api.push(a)
    api.switch(a, "exp", create=True)
    exp_data = make_data(60_000, 4)
    _commit(a, "e.bin", exp_data)
    api.push(a, "origin", ["exp"])
    _drop_remote_branch(url, opts, "exp")
    be = open_backend(url, **opts)
    pushed: list[_sync.SyncResult] = []
    calls = 0

    def refs_of(backend: Backend) -> dict[str, bytes]:
        nonlocal calls
        calls += 1
        if calls == 2:  # between marking and deleting
            # a's cache says the remote has exp's data, so this push only moves the ref
            pushed.append(api.push(a, "origin", ["exp"]))
        return _sync._remote_refs(backend)

    res = collect_remote(
        a, "origin", be, refs_of=refs_of, bundle_of=_sync._read_bundle, prune_older_than=0
    )
    assert pushed and pushed[0].packs == 0 and pushed[0].objects == 0
    assert calls == 4  # the refs moved once: marked twice
    assert res.bundles_deleted == res.packs_deleted == 0
    c = api.clone(url, str(tmp_path / "c"), branch="exp", options=opts)
    assert (c.workdir / "e.bin").read_bytes() == exp_data and verify(c, read_data=True).ok
    a.close()
    c.close()


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


def test_a_push_in_progress_is_kept_while_old_garbage_goes(tmp_path: Path) -> None:
    """Directory remote, real file ages: a push that has not moved its ref yet survives gc."""
    url = str(tmp_path / "remote")
    a = _repo(tmp_path, "a", url, {})
    _commit(a, "m.bin", make_data(40_000, 5))
    api.push(a)
    api.switch(a, "old", create=True)
    _commit(a, "o.bin", make_data(50_000, 6))
    before = _files(Path(url))
    api.push(a, "origin", ["old"])
    _drop_remote_branch(url, {}, "old")
    old_files = _files(Path(url)) - before  # its packs, indexes and bundle
    month_ago = time.time() - 30 * 86400
    for p in old_files:
        os.utime(p, (month_ago, month_ago))
    # a push in progress: its packs and indexes are there, its bundle and ref not yet
    api.switch(a, "wip", create=True, start="main")
    _commit(a, "w.bin", make_data(50_000, 7))
    before = _files(Path(url))
    api.push(a, "origin", ["wip"])
    _drop_remote_branch(url, {}, "wip")
    wip_files = _files(Path(url)) - before
    next(p for p in wip_files if p.suffix == ".bundle").unlink()
    wip_files = {p for p in wip_files if p.exists()}
    # and an old pack whose upload stopped before its index was written
    next(p for p in old_files if p.suffix == ".idx").unlink()

    res = api.gc(a, remote="origin")  # the default 14 days of grace
    assert not any(p.exists() for p in old_files)
    assert wip_files and all(p.exists() for p in wip_files)
    assert res.bundles_deleted == 1 and res.packs_kept_young >= 2
    assert api.push(a, "origin", ["wip"]).objects >= 3  # the push finishes: bundle, then ref
    c = api.clone(url, str(tmp_path / "c"), branch="wip", options={})
    assert verify(c, read_data=True).ok
    a.close()
    c.close()
