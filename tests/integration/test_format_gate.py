"""Readers refuse formats and features they do not know; bad names never get stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelstore import Repository
from modelstore.config import RepoConfig
from modelstore.errors import PathError, UnsupportedFormatError
from modelstore.metadb import Txn


def _set_config(repo: Repository, **changes: list[str]) -> None:
    with repo.db.read() as txn:
        raw = txn.get("meta", b"config")
    assert raw is not None
    cfg = RepoConfig.decode(raw)
    for k, v in changes.items():
        setattr(cfg, k, v)

    def put(txn: Txn) -> None:
        txn.put("meta", b"config", cfg.encode())

    repo.db.write(put)


def test_unknown_format_version_is_refused(tmp_path: Path) -> None:
    Repository.init(tmp_path / "w").close()
    (tmp_path / "w" / ".ms" / "FORMAT").write_text("modelstore repository format 2\n")
    with pytest.raises(UnsupportedFormatError, match="upgrade"):
        Repository.open(tmp_path / "w")


def test_unknown_incompat_feature_is_refused(tmp_path: Path) -> None:
    r = Repository.init(tmp_path / "w")
    _set_config(r, incompat=["tensor-deltas-v9"])
    r.close()
    with pytest.raises(UnsupportedFormatError, match="tensor-deltas-v9"):
        Repository.open(tmp_path / "w")


def test_unknown_ro_compat_feature_allows_reading_not_writing(tmp_path: Path) -> None:
    r = Repository.init(tmp_path / "w")
    (r.workdir / "a").write_text("a")
    r.add([str(r.workdir / "a")])
    r.commit("c")
    _set_config(r, ro_compat=["fancy-index"])
    r.close()
    with Repository.open(tmp_path / "w") as r2:
        assert r2.status().clean
        assert [c.message for _, c in r2.log()] == ["c"]
        (r2.workdir / "b").write_text("b")
        with pytest.raises(UnsupportedFormatError, match="fancy-index"):
            r2.add([str(r2.workdir / "b")])


@pytest.mark.parametrize("name", ["we\\ird", "tab\there", "bell\x07"])
def test_add_refuses_names_that_cannot_be_stored(tmp_path: Path, name: str) -> None:
    r = Repository.init(tmp_path / "w")
    d = r.workdir / "sub"
    d.mkdir()
    (d / name).write_text("x")
    with pytest.raises(PathError, match="cannot be tracked"):
        r.add([str(d)])
    (r.workdir / name).mkdir()
    (r.workdir / name / "f").write_text("x")
    with pytest.raises(PathError, match="cannot be tracked"):
        r.add([str(r.workdir / name / "f")])
    assert r.status().staged == []
    r.close()
