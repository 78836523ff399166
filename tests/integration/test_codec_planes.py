"""The byte-plane codec is a feature flag: recorded before use, refused cleanly by old readers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from modelstore.cli.main import cli

from modelstore import Repository, api, config, sync
from modelstore.backend import open_backend
from modelstore.compress import CODEC_PLANES, FEATURE_DELTA, FEATURE_PLANES
from modelstore.errors import BadArgumentError, FormatError, UnsupportedFormatError
from modelstore.verify import verify


def _bf16(n: int, seed: int = 0) -> bytes:
    w = np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.02
    return (w.view(np.uint32) >> 16).astype(np.uint16).tobytes()


WEIGHTS = _bf16(600_000)  # 1.2 MB: ~18 chunks of the default 64 KiB average


def _codecs(repo: Repository) -> set[int]:
    with repo.db.read() as txn:
        return {v[-1] for _, v in txn.items("chunks")}


def _add(repo: Repository, name: str, data: bytes, message: str = "c") -> None:
    (repo.workdir / name).write_bytes(data)
    repo.add([str(repo.workdir / name)])
    repo.commit(message)


def _cat(repo: Repository, name: str) -> bytes:
    out = io.BytesIO()
    repo.cat("HEAD", name, out)
    return out.getvalue()


def _old_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process an ms from before the feature: it knows no incompat features."""
    monkeypatch.setattr(config, "KNOWN_INCOMPAT", frozenset())
    monkeypatch.setattr(sync, "KNOWN_REMOTE_INCOMPAT", frozenset())


def test_new_repository_enables_planes_and_uses_them(tmp_path: Path) -> None:
    with Repository.init(tmp_path / "w") as r:
        assert r.config.incompat == [FEATURE_PLANES, FEATURE_DELTA] and r.store.planes
        _add(r, "model.bin", WEIGHTS)
        assert CODEC_PLANES in _codecs(r)
        st = r.store.stats()
        assert st.raw_bytes / st.stored_bytes >= 1.3
        assert _cat(r, "model.bin") == WEIGHTS
        assert verify(r, read_data=True).ok
    with Repository.open(tmp_path / "w") as r:
        assert _cat(r, "model.bin") == WEIGHTS


def test_repository_without_planes_never_writes_them(tmp_path: Path) -> None:
    with Repository.init(tmp_path / "w", planes=False) as r:
        assert r.config.incompat == [] and not r.store.planes
        _add(r, "model.bin", WEIGHTS)
        assert _codecs(r) <= {0, 1}


def test_old_reader_refuses_a_planes_repository_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Repository.init(tmp_path / "new") as r:
        _add(r, "model.bin", WEIGHTS)
    Repository.init(tmp_path / "old", planes=False).close()
    _old_reader(monkeypatch)
    with pytest.raises(UnsupportedFormatError, match=FEATURE_PLANES):
        Repository.open(tmp_path / "new")
    with Repository.open(tmp_path / "old") as r:  # never touched by the feature: still fine
        assert r.config.incompat == []


def test_enable_feature_on_an_existing_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Repository.init(tmp_path / "w", planes=False) as r:
        _add(r, "a.bin", WEIGHTS)
        assert _codecs(r) <= {0, 1}
        assert api.enable_float_codec(r) is True
        assert api.enable_float_codec(r) is False
        assert r.store.planes
        with pytest.raises(BadArgumentError):
            r.enable_feature("tensor-deltas-v9")
        _add(r, "b.bin", _bf16(600_000, 1))
        assert CODEC_PLANES in _codecs(r)
        assert _cat(r, "a.bin") == WEIGHTS
    _old_reader(monkeypatch)
    with pytest.raises(UnsupportedFormatError, match=FEATURE_PLANES):
        Repository.open(tmp_path / "w")


def test_cli_init_float_codec_options(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["init", "--no-float-codec", str(tmp_path / "w")])
    assert res.exit_code == 0, res.output
    with Repository.open(tmp_path / "w") as r:
        assert r.config.incompat == []
    res = runner.invoke(cli, ["init", "--float-codec", str(tmp_path / "w")])
    assert res.exit_code == 0 and "enabled" in res.output, res.output
    with Repository.open(tmp_path / "w") as r:
        assert r.config.incompat == [FEATURE_PLANES]
    res = runner.invoke(cli, ["init", str(tmp_path / "w")])
    assert res.exit_code != 0  # a plain init still refuses an existing repository


# -- remotes ----------------------------------------------------------------------------------


def test_push_of_plane_chunks_records_the_feature_on_the_remote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = str(tmp_path / "remote")
    with Repository.init(tmp_path / "a") as a:
        a.set_remote("origin", remote)
        _add(a, "notes.txt", b"text only, no floats\n" * 100)
        api.push(a)
        be = open_backend(remote)
        assert be.get("format") == sync.REMOTE_FORMAT  # nothing plane-coded went there
        _add(a, "model.bin", WEIGHTS, "weights")
        api.push(a)
        fmt = be.get("format")
        assert fmt == sync.REMOTE_FORMAT + f"incompat {FEATURE_PLANES}\n".encode()
        api.push(a)  # already recorded: the file stays as it is
        assert be.get("format") == fmt
    with api.clone(remote, str(tmp_path / "b")) as b:
        assert (b.workdir / "model.bin").read_bytes() == WEIGHTS
    # a client from before remote features compares the file with REMOTE_FORMAT exactly
    assert fmt != sync.REMOTE_FORMAT
    _old_reader(monkeypatch)
    monkeypatch.setattr(config, "KNOWN_INCOMPAT", frozenset({FEATURE_PLANES}))
    with Repository.init(tmp_path / "c", planes=False) as c:
        with pytest.raises(UnsupportedFormatError, match=FEATURE_PLANES):
            sync.fetch(c, "origin", remote)


def test_fetch_from_a_planes_remote_enables_the_feature_locally(tmp_path: Path) -> None:
    remote = str(tmp_path / "remote")
    with Repository.init(tmp_path / "a") as a:
        a.set_remote("origin", remote)
        _add(a, "model.bin", WEIGHTS)
        api.push(a)
    with Repository.init(tmp_path / "b", planes=False) as b:
        b.set_remote("origin", remote)
        sync.fetch(b, "origin", remote)
        assert b.config.incompat == [FEATURE_PLANES] and b.store.planes
        assert CODEC_PLANES in _codecs(b)
    with Repository.open(tmp_path / "b") as b:
        assert b.config.incompat == [FEATURE_PLANES]
        assert verify(b, read_data=True).ok


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (b"modelstore remote format 2\n", FormatError),
        (sync.REMOTE_FORMAT + b"incompat\n", FormatError),
        (sync.REMOTE_FORMAT + b"frobnicate x\n", FormatError),
        (sync.REMOTE_FORMAT + b"incompat a b\n", FormatError),
        (sync.REMOTE_FORMAT + b"incompat \xff\n", FormatError),
        (sync.REMOTE_FORMAT + b"incompat tensor-deltas-v9\n", UnsupportedFormatError),
    ],
)
def test_remote_format_file_is_checked(tmp_path: Path, text: bytes, error: type) -> None:
    be = open_backend(str(tmp_path / "remote"))
    be.put("format", text)
    with pytest.raises(error):
        sync._check_format(be, create=False)


def test_remote_unknown_compat_ignored_ro_compat_refused_for_writing(tmp_path: Path) -> None:
    be = open_backend(str(tmp_path / "remote"))
    be.put("format", sync.REMOTE_FORMAT + b"compat nice-to-have\nro_compat fancy-index\n")
    assert sync._check_format(be, create=False) == frozenset()
    with pytest.raises(UnsupportedFormatError, match="fancy-index"):
        sync._check_format(be, create=False, for_write=True)
