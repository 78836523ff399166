"""Repository.tensors / load_tensor: safetensors tensors read from any version without a
checkout, equal to what safetensors itself loads, touching only the chunks a tensor spans."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from modelstore import Repository, api
from modelstore.branches import create_tag
from modelstore.chunkstore import ChunkStore
from modelstore.errors import (
    BadArgumentError,
    FormatError,
    MsError,
    PathError,
    RefNotFoundError,
)
from tests.conftest import SMALL_CHUNKS


@pytest.fixture
def big_repo(tmp_path: Path) -> Iterator[Repository]:
    """~1 KiB chunks, so a few-MiB checkpoint has thousands of chunks and several segments."""
    r = Repository.init(tmp_path / "work", chunker=SMALL_CHUNKS, pack_size=1 << 20)
    try:
        yield r
    finally:
        r.close()


def commit_file(repo: Repository, rel: str, msg: str) -> bytes:
    repo.add([str(repo.workdir / rel)])
    return repo.commit(msg)


def numpy_tensors(seed: int) -> dict[str, np.ndarray]:
    """Every dtype safetensors.numpy writes, plus a scalar and zero-size tensors."""
    rng = np.random.default_rng(seed)
    return {
        "f64": rng.standard_normal((3, 5)),
        "f32": rng.standard_normal((64, 33)).astype(np.float32),
        "f16": rng.standard_normal((7, 9)).astype(np.float16),
        "i64": rng.integers(-(2**62), 2**62, size=(11,), dtype=np.int64),
        "i32": rng.integers(-(2**30), 2**30, size=(2, 3, 4), dtype=np.int32),
        "i16": rng.integers(-3000, 3000, size=(13,), dtype=np.int16),
        "i8": rng.integers(-100, 100, size=(17,), dtype=np.int8),
        "u64": rng.integers(0, 2**63, size=(5,), dtype=np.uint64),
        "u32": rng.integers(0, 2**31, size=(5,), dtype=np.uint32),
        "u16": rng.integers(0, 60000, size=(6,), dtype=np.uint16),
        "u8": rng.integers(0, 255, size=(4, 4), dtype=np.uint8),
        "flags": rng.random((3, 7)) > 0.5,
        "scalar": np.array(seed + 0.25, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.int64),
        "empty_f16": np.zeros((0,), dtype=np.float16),
    }


def write_raw_safetensors(path: Path, entries: list[tuple[str, str, list[int], bytes]]) -> None:
    """A safetensors file written by hand (for BF16 and FP8, which numpy cannot express)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(e[3] for e in entries))


def bf16_exact(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float32 values that bf16 holds exactly (low 16 bits zero), with signs and zeros."""
    f = rng.standard_normal(shape).astype(np.float32)
    f.flat[0] = 0.0
    f.flat[-1] = -0.0
    return (f.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


# -- values equal the reference loader --------------------------------------------------------
def test_every_numpy_dtype_equals_what_safetensors_loads(repo: Repository, tmp_path: Path) -> None:
    src = numpy_tensors(1)
    save_file(src, str(repo.workdir / "model.safetensors"), metadata={"step": "1"})
    commit_file(repo, "model.safetensors", "v1")
    repo.checkout("HEAD", to=tmp_path / "out")
    ref = load_file(str(tmp_path / "out" / "model.safetensors"))

    infos = repo.tensors("HEAD", "model.safetensors")
    assert sorted(t.name for t in infos) == sorted(src)
    assert [t.start for t in infos] == sorted(t.start for t in infos)  # file order
    with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="np") as f:
        for t in infos:
            s = f.get_slice(t.name)
            assert t.dtype == s.get_dtype() and list(t.shape) == s.get_shape()
            assert t.nbytes == ref[t.name].nbytes
    for t in infos:
        got = repo.load_tensor("HEAD", "model.safetensors", t.name)
        want = ref[t.name]
        assert got.dtype == want.dtype and got.shape == want.shape, t.name
        np.testing.assert_array_equal(got, want)
        assert got.flags.writeable and got.flags.c_contiguous
    assert repo.load_tensor("HEAD", "model.safetensors", "scalar").shape == ()
    # nan and signed zero survive bit for bit (assert_array_equal would hide a -0.0 -> 0.0)
    f32 = repo.load_tensor("HEAD", "model.safetensors", "f32")
    assert f32.tobytes() == ref["f32"].tobytes()


def test_bf16_widens_exactly_and_raw_gives_the_stored_bits(repo: Repository) -> None:
    rng = np.random.default_rng(7)
    wide = bf16_exact(rng, (5, 6))
    bits = (wide.view(np.uint32) >> 16).astype("<u2")
    fp8 = rng.integers(0, 256, size=(9,), dtype=np.uint8)
    flags = np.array([0, 1, 2, 255], dtype=np.uint8)  # any non-zero byte reads as True
    write_raw_safetensors(
        repo.workdir / "bf16.safetensors",
        [
            ("w", "BF16", [5, 6], bits.tobytes()),
            ("q", "F8_E4M3", [9], fp8.tobytes()),
            ("b", "BOOL", [2, 2], flags.tobytes()),
            ("s", "BF16", [], bits[0, 1:2].tobytes()),
            ("z", "BF16", [0, 3], b""),
        ],
    )
    commit_file(repo, "bf16.safetensors", "bf16")

    w = repo.load_tensor("HEAD", "bf16.safetensors", "w")
    assert w.dtype == np.float32 and w.shape == (5, 6)
    assert w.tobytes() == wide.tobytes()  # exact, including -0.0
    raw = repo.load_tensor("HEAD", "bf16.safetensors", "w", raw=True)
    assert raw.dtype == np.dtype("<u2") and raw.tobytes() == bits.tobytes()
    q = repo.load_tensor("HEAD", "bf16.safetensors", "q")
    assert q.dtype == np.uint8 and q.tobytes() == fp8.tobytes()  # FP8 stays opaque
    b = repo.load_tensor("HEAD", "bf16.safetensors", "b")
    assert b.dtype == np.bool_ and b.tolist() == [[False, True], [True, True]]
    assert repo.load_tensor("HEAD", "bf16.safetensors", "b", raw=True).tolist() == [
        [0, 1],
        [2, 255],
    ]
    s = repo.load_tensor("HEAD", "bf16.safetensors", "s")
    assert s.shape == () and s == wide[0, 1]
    z = repo.load_tensor("HEAD", "bf16.safetensors", "z")
    assert z.shape == (0, 3) and z.dtype == np.float32
    # and safetensors itself agrees on the tensors numpy can express
    with safe_open(str(repo.workdir / "bf16.safetensors"), framework="np") as f:
        assert {t.name for t in repo.tensors("HEAD", "bf16.safetensors")} == set(f.keys())


def test_old_revisions_load_old_values(repo: Repository, tmp_path: Path) -> None:
    path = repo.workdir / "model.safetensors"
    v1, v2 = numpy_tensors(1), numpy_tensors(2)
    save_file(v1, str(path))
    commit_file(repo, "model.safetensors", "v1")
    create_tag(repo, "v1", "HEAD")
    save_file(v2, str(path))
    commit_file(repo, "model.safetensors", "v2")
    path.unlink()  # the working tree plays no part

    for rev, want in (("v1", v1), ("HEAD~1", v1), ("HEAD", v2), ("main", v2)):
        for name in ("f32", "i64", "flags", "scalar"):
            np.testing.assert_array_equal(
                repo.load_tensor(rev, "model.safetensors", name), want[name]
            )
    assert not np.array_equal(v1["f32"], v2["f32"])
    # the api closes what it opens and gives the same answers
    w = str(repo.workdir)
    assert api.tensors(w, "v1", "model.safetensors") == repo.tensors("v1", "model.safetensors")
    np.testing.assert_array_equal(api.load_tensor(w, "v1", "model.safetensors", "u16"), v1["u16"])


# -- reads only what a tensor spans -----------------------------------------------------------
def chunk_spans(repo: Repository, rev: str, path: str) -> list[tuple[int, int, bytes]]:
    out, pos = [], 0
    for cid, n in repo.manifest_chunks(repo.file_manifest(rev, path)):
        out.append((pos, pos + n, cid))
        pos += n
    return out


def test_load_tensor_reads_only_the_chunks_its_range_spans(
    big_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = big_repo
    rng = np.random.default_rng(3)
    src = {f"layer{i:02d}.w": rng.standard_normal((96, 256)).astype(np.float32) for i in range(64)}
    src["tiny"] = np.arange(3, dtype=np.int64)
    src["none"] = np.zeros((0,), dtype=np.float32)
    save_file(src, str(repo.workdir / "ckpt.safetensors"))
    commit_file(repo, "ckpt.safetensors", "ckpt")
    m = repo.file_manifest("HEAD", "ckpt.safetensors")
    spans = chunk_spans(repo, "HEAD", "ckpt.safetensors")
    assert m.size > 6 << 20 and len(m.segments) >= 2 and len(spans) > 4000

    read: list[bytes] = []
    orig = ChunkStore.read_chunk

    def counting(self: ChunkStore, chunk_id: bytes) -> bytes:
        read.append(bytes(chunk_id))
        return orig(self, chunk_id)

    monkeypatch.setattr(ChunkStore, "read_chunk", counting)
    infos = {t.name: t for t in repo.tensors("HEAD", "ckpt.safetensors")}
    header_end = min(t.start for t in infos.values())
    header_chunks = {c for s, e, c in spans if s < header_end}
    assert set(read) == header_chunks
    for name in ("layer00.w", "layer31.w", "layer63.w", "tiny", "none"):
        t = infos[name]
        read.clear()
        got = repo.load_tensor("HEAD", "ckpt.safetensors", name)
        np.testing.assert_array_equal(got, src[name])
        spanned = {c for s, e, c in spans if s < t.end and e > t.start}  # empty if 0 bytes
        assert set(read) == header_chunks | spanned, name
        assert len(read) <= len(header_chunks) + len(spanned)  # none fetched twice
        assert len(read) < len(spans) // 50
    assert infos["none"].nbytes == 0 and infos["none"].start > header_end  # a real case


# -- errors -----------------------------------------------------------------------------------
def test_errors_are_clear_ms_errors(repo: Repository) -> None:
    w = repo.workdir
    save_file({"a": np.ones(3, np.float32), "b": np.zeros(2, np.int8)}, str(w / "m.safetensors"))
    (w / "data").mkdir()
    (w / "data" / "train.csv").write_text("a,b\n1,2\n")
    (w / "broken.safetensors").write_bytes(struct.pack("<Q", 16) + b'{"a": 1}' + b" " * 8)
    repo.add([str(w)])
    repo.commit("c")

    with pytest.raises(
        BadArgumentError,
        match=r"m\.safetensors in commit [0-9a-f]{12}: no tensor 'c' \(it has 'a', 'b'\)",
    ):
        repo.load_tensor("HEAD", "m.safetensors", "c")
    with pytest.raises(BadArgumentError, match=r"train\.csv in commit .*: not a safetensors file"):
        repo.tensors("HEAD", "data/train.csv")
    with pytest.raises(BadArgumentError, match="not a safetensors file"):
        repo.load_tensor("HEAD", "data/train.csv", "a")
    with pytest.raises(
        FormatError, match=r"broken\.safetensors in commit .*: safetensors: tensor 'a'"
    ):
        repo.tensors("HEAD", "broken.safetensors")
    with pytest.raises(PathError, match=r"nope\.safetensors: not in HEAD"):
        repo.tensors("HEAD", "nope.safetensors")
    with pytest.raises(PathError, match="is a directory"):
        repo.load_tensor("HEAD", "data", "a")
    with pytest.raises(RefNotFoundError, match="unknown revision 'v9'"):
        repo.load_tensor("v9", "m.safetensors", "a")
    with pytest.raises(MsError):
        api.load_tensor(str(w), "HEAD", "m.safetensors", "zzz")
