"""The same push → clone → push-again round trip on every remote kind: directory, S3, ms serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelstore import Repository, api
from modelstore.chunker import ChunkerParams
from modelstore.errors import RefConflictError
from modelstore.verify import verify
from tests.conftest import make_data

SMALL = ChunkerParams(min_size=256, avg_size=1024, max_size=4096)


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


def test_remote_round_trip(remote: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, opts = remote
    a = Repository.init(tmp_path / "a", chunker=SMALL, pack_size=32 << 10)
    api.remote_add(a, "origin", url, **opts)
    data = make_data(150_000, 4)
    (a.workdir / "m.bin").write_bytes(data)
    a.add([str(a.workdir / "m.bin")])
    a.commit("v1")
    first = api.push(a)
    assert first.packs >= 2 and first.refs

    b = api.clone(url, str(tmp_path / "b"), options=opts)
    assert (b.workdir / "m.bin").read_bytes() == data
    assert verify(b, read_data=True).ok

    changed = data[:75_000] + b"edit" + data[75_000:]
    (a.workdir / "m.bin").write_bytes(changed)
    a.add([str(a.workdir / "m.bin")])
    a.commit("v2")
    second = api.push(a)
    assert 0 < second.bytes < first.bytes / 5  # only the chunks around the edit
    assert api.push(a).up_to_date

    (b.workdir / "b.txt").write_text("b")
    b.add([str(b.workdir / "b.txt")])
    b.commit("b")
    with pytest.raises(RefConflictError, match="non-fast-forward"):
        api.push(b)
    _, merged = api.pull(b)
    assert merged.status == "merged" and (b.workdir / "m.bin").read_bytes() == changed
    api.push(b)
    api.pull(a)
    assert a.resolve("main") == b.resolve("main")
    a.close()
    b.close()


def test_aliases_round_trip(remote: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """An alias pushed, cloned, rolled back elsewhere and followed; a stale push is refused."""
    url, opts = remote
    a = Repository.init(tmp_path / "a", chunker=SMALL, pack_size=32 << 10)
    api.remote_add(a, "origin", url, **opts)
    ids = []
    for i in range(3):
        (a.workdir / "m.bin").write_bytes(make_data(20_000, 10 + i))
        a.add([str(a.workdir / "m.bin")])
        ids.append(a.commit(f"v{i}"))
    api.alias_set(a, "production", ids[1].hex(), "passed eval")
    api.alias_set(a, "production", ids[2].hex(), "ship v3")
    assert api.push(a, aliases=True).aliases == {"production": ids[2].hex()}

    b = api.clone(url, str(tmp_path / "b"), options=opts)
    assert b.resolve("@production") == ids[2]
    api.rollback(b, "production", to=ids[1].hex(), message="v3 regressed")
    assert api.push(b, "origin", ["@production"]).aliases == {"production": ids[1].hex()}

    api.alias_set(a, "staging", ids[0].hex())
    with pytest.raises(RefConflictError, match="fetch first"):
        api.push(a, aliases=True)  # production moved on the remote since a last looked
    res = api.fetch(a)
    assert res.aliases == {"production": ids[1].hex()} and a.resolve("@production") == ids[1]
    assert api.alias_history(a, "production")[0]["command"] == "fetch"
    api.push(a, aliases=True)
    assert api.fetch(b).aliases == {"staging": ids[0].hex()}
    assert verify(b, read_data=True).ok
    a.close()
    b.close()
