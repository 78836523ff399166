import json
import struct

import numpy as np
import pytest

from bench.gen import GiB, MiB, layout, parse_size, write_checkpoint

safetensors = pytest.importorskip("safetensors")
safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _load_bf16_aware(path):
    """{name: (shape, dtype)} via safe_open (validates header and full coverage);
    safetensors.numpy.load_file needs ml_dtypes for BF16, so use it only if present."""
    try:
        import ml_dtypes  # noqa: F401

        return {
            k: (v.shape, "BF16" if "bfloat16" in str(v.dtype) else "F32")
            for k, v in safetensors_numpy.load_file(str(path)).items()
        }
    except ImportError:
        pass
    with safetensors.safe_open(str(path), framework="np") as f:
        return {
            k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()
        }


SIZE = 4 * MiB


def _header(path):
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        raw = fh.read(n)
    return n, json.loads(raw)


def _tensor_bytes(path):
    n, hdr = _header(path)
    data = (path.read_bytes())[8 + n :]
    return {
        k: data[v["data_offsets"][0] : v["data_offsets"][1]]
        for k, v in hdr.items()
        if k != "__metadata__"
    }


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    p = tmp_path_factory.mktemp("gen") / "v1.safetensors"
    info = write_checkpoint(p, SIZE, dtype="bf16", seed=0)
    return p, info


def test_loads_with_safetensors(base):
    path, info = base
    n, hdr = _header(path)
    assert n % 8 == 0
    assert "__metadata__" in hdr
    assert info["bytes"] == path.stat().st_size
    assert abs(info["bytes"] - SIZE) < 0.05 * SIZE
    loaded = _load_bf16_aware(path)
    specs = layout(SIZE, "bf16")
    assert info["tensors"] == len(specs) == len(loaded)
    assert len(specs) >= 30
    # header order == layout order, data contiguous in that order
    names = [k for k in hdr if k != "__metadata__"]
    assert names == [s.name for s in specs]
    off = 0
    for s in specs:
        meta = hdr[s.name]
        assert meta["dtype"] == "BF16"
        assert tuple(meta["shape"]) == s.shape == tuple(loaded[s.name][0])
        assert loaded[s.name][1] == "BF16"
        assert meta["data_offsets"] == [off, off + s.nbytes]
        off += s.nbytes
    assert 8 + n + off == info["bytes"]
    # values: weights ~N(0, 0.02), norms ~N(0, 1); bf16 = top half of a float32
    raw = _tensor_bytes(path)
    q = np.frombuffer(raw["model.layers.0.self_attn.q_proj.weight"], dtype=np.uint16)
    q32 = (q.astype(np.uint32) << 16).view(np.float32)
    assert abs(float(q32.std()) - 0.02) < 0.002
    assert abs(float(q32.mean())) < 0.002
    nrm = np.frombuffer(raw["model.norm.weight"], dtype=np.uint16)
    n32 = (nrm.astype(np.uint32) << 16).view(np.float32)
    assert 0.7 < float(n32.std()) < 1.3


def test_same_seed_same_bytes(base, tmp_path):
    path, _ = base
    again = tmp_path / "again.safetensors"
    write_checkpoint(again, SIZE, dtype="bf16", seed=0, threads=1)
    assert again.read_bytes() == path.read_bytes()
    other = tmp_path / "other.safetensors"
    write_checkpoint(other, SIZE, dtype="bf16", seed=1)
    assert other.stat().st_size == path.stat().st_size
    assert other.read_bytes() != path.read_bytes()


def test_change_fraction(base, tmp_path):
    path, info = base
    v2 = tmp_path / "v2.safetensors"
    info2 = write_checkpoint(v2, SIZE, dtype="bf16", seed=0, change_fraction=0.1)
    assert info2["bytes"] == info["bytes"]
    assert _header(v2) == _header(path)  # same layout, same offsets
    assert info2["changed_tensors"] == round(0.1 * info["tensors"]) == len(info2["changed"])
    a, b = _tensor_bytes(path), _tensor_bytes(v2)
    differ = {k for k in a if a[k] != b[k]}
    assert differ == set(info2["changed"])
    assert sum(len(a[k]) for k in differ) == info2["changed_bytes"]
    assert 0.03 < info2["changed_bytes"] / info["bytes"] < 0.2
    # deterministic in change_seed, different for another change_seed
    v3 = tmp_path / "v3.safetensors"
    info3 = write_checkpoint(v3, SIZE, dtype="bf16", seed=0, change_fraction=0.1)
    assert info3["changed"] == info2["changed"]
    assert v3.read_bytes() == v2.read_bytes()


@pytest.mark.parametrize("dtype", ["fp32", "mixed"])
def test_other_dtypes(tmp_path, dtype):
    p = tmp_path / f"{dtype}.safetensors"
    info = write_checkpoint(p, 2 * MiB, dtype=dtype, seed=3)
    loaded = _load_bf16_aware(p)
    assert len(loaded) == info["tensors"]
    want = {"F32"} if dtype == "fp32" else {"BF16", "F32"}
    assert {dt for _, dt in loaded.values()} == want
    if dtype == "fp32":
        arrays = safetensors_numpy.load_file(str(p))
        w = arrays["model.layers.0.mlp.up_proj.weight"]
        assert w.dtype == np.float32 and abs(float(w.std()) - 0.02) < 0.002


def test_big_layout_and_change_selection():
    specs = layout(2 * GiB, "bf16")
    total = sum(s.nbytes for s in specs)
    assert abs(total - 2 * GiB) < 0.01 * 2 * GiB
    assert max(s.nbytes for s in specs) < 256 * MiB
    from bench.gen import choose_changed

    idx = choose_changed(specs, 0.1, change_seed=1)
    assert len(idx) == round(0.1 * len(specs))
    frac = sum(specs[i].nbytes for i in idx) / total
    assert 0.08 < frac < 0.12
    assert choose_changed(specs, 0.1, change_seed=2) != idx


def test_parse_size():
    assert parse_size("2GiB") == 2 * GiB
    assert parse_size("512MiB") == 512 * MiB
    assert parse_size("1GB") == 10**9
    assert parse_size("4096") == 4096
    with pytest.raises(ValueError):
        parse_size("lots")
