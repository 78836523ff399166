"""Deltas against the previous version (issue 7 §3): stored small, read back exact, kept alive.

Each test builds real repositories on disk: a bf16 safetensors checkpoint, then the next one
with every weight moved by a few optimizer-sized steps, added over it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelstore import api, config, refs, sync
from modelstore.backend import open_backend
from modelstore.compress import CODEC_DELTA, FEATURE_DELTA, parse_delta
from modelstore.errors import BadArgumentError, UnsupportedFormatError
from modelstore.objects import Commit
from modelstore.repository import Repository
from modelstore.verify import verify

N_TENSORS, DIM = 6, 384  # 6 x 288 KiB of bf16: ~1.7 MiB, a few chunks per tensor


def _bf16(a: np.ndarray) -> np.ndarray:
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _save(
    path: Path, weights: dict[str, np.ndarray], dtype: str = "BF16", step: int = 0
) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"step": str(step)}}
    blobs = []
    off = 0
    for name, w in weights.items():
        b = (_bf16(w) if dtype == "BF16" else w.astype(np.float32)).tobytes()
        header[name] = {"dtype": dtype, "shape": list(w.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    data = struct.pack("<Q", len(h)) + h + b"".join(blobs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        f"layers.{i}.weight": rng.normal(0, 0.02, (DIM, DIM)).astype(np.float32)
        for i in range(N_TENSORS)
    }


def _step(m: dict[str, np.ndarray], seed: int, lr: float = 1e-4) -> dict[str, np.ndarray]:
    """Every weight moved by three Adam-sized steps (~lr each)."""
    rng = np.random.default_rng(1000 + seed)
    return {
        k: w + lr * np.clip(rng.normal(0, 1, (3, *w.shape)), -3, 3).sum(0).astype(np.float32)
        for k, w in m.items()
    }


def _commit(r: Repository, rel: str, weights: dict[str, np.ndarray], **kw: Any) -> bytes:
    data = _save(r.workdir / rel, weights, **kw)
    r.add([str(r.workdir / rel)])
    r.commit(f"save {rel}")
    return data


def _stored(r: Repository) -> int:
    return r.store.stats().stored_bytes


def _deltas(r: Repository) -> dict[bytes, tuple[bytes, int]]:
    """Every delta chunk: chunk id -> (base id, depth)."""
    out = {}
    with r.db.read() as txn:
        items = txn.items("chunks")
    for cid, _ in items:
        with r.db.read() as txn:
            loc = r.store.locate(txn, cid)
        assert loc is not None
        if loc.codec == CODEC_DELTA:
            head = parse_delta(r.store.read_stored(loc)[1:])
            out[cid] = (head.base_id, head.depth)
    return out


def _cat(r: Repository, rel: str, rev: str = "HEAD") -> bytes:
    with r.open_file(rel, rev) as f:
        return f.read()


def _head(r: Repository) -> bytes:
    with r.db.read() as txn:
        head = refs.resolve_ref(txn, refs.HEAD)[1]
    assert head is not None
    return head


def _orphan(r: Repository, branch: str | None = None) -> None:
    """HEAD's tree as a parentless commit: on a new ``branch``, else replacing the branch."""
    head = _head(r)
    c = r.get_commit(head)

    def write(txn: Any) -> None:
        oid = r._put(txn, Commit(c.tree_id, (), c.author, c.time, c.tz_offset, "alone", {}))
        if branch is None:
            r._move_ref(txn, refs.HEAD, head, oid, "reset", "squash")
        else:
            refs.set_if_equals(txn, f"refs/heads/{branch}", None, oid)

    r.db.write(write)


@pytest.fixture
def repo(tmp_path: Path) -> Any:
    with Repository.init(tmp_path / "w") as r:
        yield r


def test_next_checkpoint_is_stored_as_small_deltas_and_reads_back(repo: Repository) -> None:
    m0 = _model()
    v0 = _commit(repo, "model.safetensors", m0)
    plain = _stored(repo)
    v1 = _commit(repo, "model.safetensors", _step(m0, 1))
    added = _stored(repo) - plain
    deltas = _deltas(repo)
    # every changed tensor chunk is a delta against the previous version, at depth 1
    assert len(deltas) >= N_TENSORS and {d for _, d in deltas.values()} == {1}
    assert added <= 0.6 * plain, (added, plain)  # issue 7 §3 target, here ~0.5
    assert _cat(repo, "model.safetensors") == v1
    assert _cat(repo, "model.safetensors", "HEAD~1") == v0
    assert verify(repo, read_data=True).ok
    repo.checkout("HEAD~1")
    assert (repo.workdir / "model.safetensors").read_bytes() == v0
    repo.checkout("main")
    assert (repo.workdir / "model.safetensors").read_bytes() == v1


def test_a_plain_repository_stores_the_same_version_larger(tmp_path: Path) -> None:
    m0 = _model()
    sizes = {}
    for delta in (True, False):
        with Repository.init(tmp_path / str(delta), delta=delta) as r:
            assert (FEATURE_DELTA in r.config.incompat) is delta
            _commit(r, "model.safetensors", m0)
            before = _stored(r)
            _commit(r, "model.safetensors", _step(m0, 1))
            sizes[delta] = _stored(r) - before
            assert bool(_deltas(r)) is delta
    assert sizes[True] <= 0.6 * sizes[False], sizes


def test_chains_stop_at_delta_depth_with_a_full_copy(tmp_path: Path) -> None:
    with Repository.init(tmp_path / "w", delta_depth=2) as r:
        m = _model()
        versions = [_commit(r, "model.safetensors", m)]
        sizes = []
        for k in range(1, 5):
            before = _stored(r)
            m = _step(m, k)
            versions.append(_commit(r, "model.safetensors", m))
            sizes.append(_stored(r) - before)
        depths = {d for _, d in _deltas(r).values()}
        assert depths == {1, 2}  # v1, v2 deltas; v3 whole again (a keyframe); v4 a delta of it
        assert sizes[2] > 1.5 * max(sizes[0], sizes[1], sizes[3])
        for k, data in enumerate(versions):
            assert _cat(r, "model.safetensors", f"HEAD~{4 - k}") == data
        assert verify(r, read_data=True).ok


def test_unchanged_tensors_dedup_and_the_same_content_keeps_its_manifest(repo: Repository) -> None:
    m0 = _model()
    _commit(repo, "model.safetensors", m0)
    m1 = dict(m0)
    m1["layers.2.weight"] = _step({"x": m0["layers.2.weight"]}, 7)["x"]
    before = _stored(repo)
    _commit(repo, "model.safetensors", m1)
    # only the one changed tensor is stored again, as deltas
    assert _stored(repo) - before < 0.5 * DIM * DIM * 2
    with repo.db.read() as txn:
        staged = repo._index(txn)["model.safetensors"].manifest_id
    # touched but unchanged: added again, it is cut like HEAD's version: the same manifest
    p = repo.workdir / "model.safetensors"
    p.write_bytes(p.read_bytes())
    assert repo.status().modified == []
    assert api.diff(repo).files == []  # the working file scans to the staged manifest
    repo.add([str(p)])
    with repo.db.read() as txn:
        assert repo._index(txn)["model.safetensors"].manifest_id == staged


def test_a_checkpoint_in_a_new_folder_takes_deltas_against_its_namesake(
    repo: Repository,
) -> None:
    m0 = _model()
    _commit(repo, "ckpt/step-1000/model.safetensors", m0)
    before = _stored(repo)
    v1 = _commit(repo, "ckpt/step-2000/model.safetensors", _step(m0, 1))
    assert _deltas(repo) and _stored(repo) - before <= 0.6 * before
    assert _cat(repo, "ckpt/step-2000/model.safetensors") == v1


def test_files_that_are_not_safetensors_get_no_deltas(repo: Repository) -> None:
    m0 = _model()
    raw0 = _save(repo.workdir / "x.safetensors", m0)
    (repo.workdir / "weights.bin").write_bytes(raw0[100:])  # the same floats, no header
    repo.add([str(repo.workdir / "weights.bin")])
    repo.commit("bin")
    raw1 = _save(repo.workdir / "x.safetensors", _step(m0, 1))
    (repo.workdir / "weights.bin").write_bytes(raw1[100:])
    repo.add([str(repo.workdir / "weights.bin")])
    repo.commit("bin 2")
    assert _deltas(repo) == {}
    assert _cat(repo, "weights.bin") == raw1[100:]


def test_gc_keeps_the_bases_of_live_deltas(repo: Repository) -> None:
    m0 = _model()
    _commit(repo, "model.safetensors", m0)
    v1 = _commit(repo, "model.safetensors", _step(m0, 1))
    assert _deltas(repo)
    _orphan(repo)  # main becomes one parentless commit of v1: v0's commit is garbage
    res = api.gc(repo, prune_older_than="0", expire_reflog="0", repack_threshold=1.0)
    assert res.objects_dropped >= 2  # v0's commit, manifest and tree went
    assert _cat(repo, "model.safetensors") == v1  # but the bases of v1's deltas stayed
    assert verify(repo, read_data=True).ok


def test_push_fetch_clone_and_lazy_reads_carry_the_bases(tmp_path: Path) -> None:
    remote = str(tmp_path / "remote")
    with Repository.init(tmp_path / "a") as a:
        api.remote_add(a, "origin", remote)
        m0 = _model()
        v0 = _commit(a, "model.safetensors", m0)
        v1 = _commit(a, "model.safetensors", _step(m0, 1))
        api.push(a)
    fmt = (Path(remote) / "format").read_text()
    assert f"incompat {FEATURE_DELTA}" in fmt
    with api.clone(remote, str(tmp_path / "b")) as b:
        assert FEATURE_DELTA in b.config.incompat and _deltas(b)
        assert (b.workdir / "model.safetensors").read_bytes() == v1
        assert _cat(b, "model.safetensors", "HEAD~1") == v0
        assert verify(b, read_data=True).ok
    with api.clone(remote, str(tmp_path / "c"), lazy=True) as c:
        assert _cat(c, "model.safetensors") == v1  # bases fetched on demand
    assert verify_remote_ok(tmp_path / "b")


def verify_remote_ok(repo_path: Path) -> bool:
    rep = api.verify(str(repo_path), remote="origin", read_data=True)
    return rep.ok and rep.chunks_read > 0


def test_a_fetch_gets_bases_no_reachable_commit_names(tmp_path: Path) -> None:
    """The remote's only commit is v1; its deltas' bases are chunks of a commit gone."""
    remote = str(tmp_path / "remote")
    with Repository.init(tmp_path / "a") as a:
        m0 = _model()
        _commit(a, "model.safetensors", m0)
        v1 = _commit(a, "model.safetensors", _step(m0, 1))
        _orphan(a, "solo")
        api.remote_add(a, "origin", remote)
        api.push(a, "origin", ["solo"])  # sends v1's deltas and, for them, v0's chunks
    with Repository.init(tmp_path / "b") as b:
        api.remote_add(b, "origin", remote)
        res = sync.fetch(b, "origin", remote)
        assert res.chunks > 0
        b.checkout("origin/solo")
        assert (b.workdir / "model.safetensors").read_bytes() == v1
        assert verify(b, read_data=True).ok


def test_verify_names_a_missing_base_and_repair_refetches_it(tmp_path: Path) -> None:
    remote = str(tmp_path / "remote")
    with Repository.init(tmp_path / "a") as a:
        api.remote_add(a, "origin", remote)
        m0 = _model()
        _commit(a, "model.safetensors", m0)
        v1 = _commit(a, "model.safetensors", _step(m0, 1))
        api.push(a)
        deltas = _deltas(a)
        cid, (base, _) = next(iter(deltas.items()))
        a.db.write(lambda txn: txn.delete("chunks", base))  # the base is lost here
        rep = verify(a, read_data=True)
        assert not rep.ok
        kinds = {p.kind: p for p in rep.problems if base.hex()[:16] in p.detail}
        missing, undecodable = kinds["missing-chunk"], kinds["chunk"]
        assert f"delta base of chunk {cid.hex()[:16]}" in missing.where
        # both versions are named: v0 holds the base, v1's delta cannot be decoded without it
        hit = {c for p in (missing, undecodable) for a in p.affects for c in a.commits}
        assert len(hit) == 2
        fixed = api.repair(a, "origin")
        assert fixed.after.ok
        assert _cat(a, "model.safetensors") == v1
        assert verify(a, read_data=True).ok


def test_an_ms_without_the_feature_refuses_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Repository.init(tmp_path / "w").close()
    monkeypatch.setattr(config, "KNOWN_INCOMPAT", config.KNOWN_INCOMPAT - {FEATURE_DELTA})
    with pytest.raises(UnsupportedFormatError, match=FEATURE_DELTA):
        Repository.open(tmp_path / "w")


def test_deltas_can_be_turned_on_later_only_with_tensor_aware_chunking(tmp_path: Path) -> None:
    with Repository.init(tmp_path / "a", delta=False) as a:
        assert FEATURE_DELTA not in a.config.incompat
        assert api.enable_deltas(a) is True and a.store.delta
        assert api.enable_deltas(a) is False
    with Repository.open(tmp_path / "a") as a:
        assert FEATURE_DELTA in a.config.incompat and a.store.delta
    with Repository.init(tmp_path / "b", tensor_aware=False, delta=False) as b:
        with pytest.raises(BadArgumentError, match="tensor-aware"):
            api.enable_deltas(b)


def test_remote_gc_keeps_the_bases_of_live_deltas(tmp_path: Path) -> None:
    remote = str(tmp_path / "remote")
    with Repository.init(tmp_path / "a") as a:
        api.remote_add(a, "origin", remote)
        m0 = _model()
        _commit(a, "model.safetensors", m0)
        api.push(a)  # v0: packs and a bundle of its own
        v1 = _commit(a, "model.safetensors", _step(m0, 1), step=1)  # a new header chunk too
        head = _head(a)
        c = a.get_commit(head)
        files = [a.commit_files(x)["model.safetensors"].id for x in (c.parents[0], head)]
        chunks = [{cid for cid, _ in a.manifest_chunks(a.get_manifest(f))} for f in files]
        assert not chunks[0] & chunks[1]  # v1 names no chunk of v0: only deltas keep them
        _orphan(a, "solo")
        api.push(a, "origin", ["solo"])
        open_backend(remote).delete(sync._ref_key("refs/heads/main"))  # v0 is garbage there
        res = api.gc(a, remote="origin", prune_older_than="0")
        assert res.bundles_deleted == 1 and res.packs_deleted == 0  # v0's commit went ...
    with api.clone(remote, str(tmp_path / "b"), branch="solo") as b:  # ... but not its chunks
        assert (b.workdir / "model.safetensors").read_bytes() == v1
        assert verify(b, read_data=True).ok


def test_cuts_are_inherited_across_ingest_blocks(repo: Repository) -> None:
    """A 24 MiB file spans three 8 MiB ingest blocks: every region still cuts like its base."""
    rng = np.random.default_rng(5)
    m0 = {f"big.{i}": rng.normal(0, 0.02, (2048, 1024)).astype(np.float32) for i in range(6)}
    _commit(repo, "model.safetensors", m0)
    _commit(repo, "model.safetensors", _step(m0, 1), step=1)  # the header grows: data shifts
    head = _head(repo)
    c = repo.get_commit(head)
    old, new = (
        repo.get_manifest(repo.commit_files(x)["model.safetensors"].id)
        for x in (c.parents[0], head)
    )
    lens = [[n for _, n in repo.manifest_chunks(m)] for m in (old, new)]
    # the header chunk(s) differ; from the first tensor on, the chunk lengths are the same
    assert lens[0][-200:] == lens[1][-200:] and len(lens[1]) > 300
    deltas = _deltas(repo)
    assert len(deltas) > 0.9 * (len(lens[1]) - 2)
    # a scan with the plan the add used (against v0) cuts exactly as the add did
    v0_entry = repo.commit_files(c.parents[0])["model.safetensors"]
    with open(repo.workdir / "model.safetensors", "rb") as f:
        plan = repo._delta_plan(f, v0_entry)
        assert plan is not None and len(plan.regions) == 6
        assert repo.store.scan(f, None, plan).id == new.id
        assert repo.store.scan(f, None, None).id != new.id  # plain CDC cuts elsewhere


def test_dead_deltas_in_a_pack_gc_kept_whole_harm_no_clone(tmp_path: Path) -> None:
    """Remote gc keeps a partly live pack whole; its dead deltas' bases may be gone."""
    remote = str(tmp_path / "remote")
    other = np.random.default_rng(9).bytes(4 << 20)
    with Repository.init(tmp_path / "a") as a:
        api.remote_add(a, "origin", remote)
        m0 = _model()
        _commit(a, "model.safetensors", m0)
        api.push(a)  # pack 1: v0 only
        (a.workdir / "other.bin").write_bytes(other)
        _save(a.workdir / "model.safetensors", _step(m0, 1), step=1)
        a.add([str(a.workdir / "other.bin"), str(a.workdir / "model.safetensors")])
        a.commit("v1 and other.bin")
        assert _deltas(a)
        api.push(a)  # pack 2: v1's deltas and other.bin
    with Repository.init(tmp_path / "c") as c:  # a new history: a near-copy of other.bin
        (c.workdir / "other.bin").write_bytes(other + b"!")
        c.add([str(c.workdir / "other.bin")])
        c.commit("only other.bin")
        api.remote_add(c, "origin", remote)
        api.push(c, force=True)
        res = api.gc(c, remote="origin", prune_older_than="0")
        assert res.packs_deleted == 1  # v0's pack: nothing live needs it any more
    with api.clone(remote, str(tmp_path / "d")) as d:  # pack 2 comes whole
        assert (d.workdir / "other.bin").read_bytes() == other + b"!"
        assert verify(d, read_data=True).ok
        assert _deltas(d) == {}  # the dead deltas came in the pack file but are not indexed
        rep = api.verify(d, remote="origin", read_data=True)
        assert rep.ok, rep.problems


def test_merging_the_same_bytes_chunked_two_ways_is_no_conflict(repo: Repository) -> None:
    """Cut like the previous version on one branch, by plain CDC on the other: same file."""
    m0 = _model()
    _commit(repo, "model.safetensors", m0)
    m1 = _step(m0, 1)
    api.switch(repo, "a", create=True)
    v1 = _commit(repo, "model.safetensors", m1)  # a delta of v0, cut where v0 was cut
    api.switch(repo, "main")
    api.switch(repo, "b", create=True)
    repo.rm([str(repo.workdir / "model.safetensors")])
    repo.commit("drop it")
    _commit(repo, "model.safetensors", m1)  # no previous version: content-defined cuts
    ids = {repo.commit_files(repo.resolve(b))["model.safetensors"].id for b in ("a", "b")}
    assert len(ids) == 2  # two manifests of the same bytes
    res = api.merge(repo, "a")
    assert res.status == "merged" and res.conflicts == []
    assert _cat(repo, "model.safetensors") == v1
