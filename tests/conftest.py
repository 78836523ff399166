"""Shared fixtures: a clean environment, seeded data, repositories with tiny packs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from modelstore.chunker import ChunkerParams, splitmix64_bytes

settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "deep", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: small chunks so multi-chunk and multi-pack paths run on KB-sized data
SMALL_CHUNKS = ChunkerParams(min_size=256, avg_size=1024, max_size=4096)
SMALL_PACK = 16 * 1024


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No MS_* variables and a private HOME, so the developer's setup cannot leak in."""
    for k in list(os.environ):
        if k.startswith("MS_"):
            monkeypatch.delenv(k)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("MS_AUTHOR", "tester@example")
    monkeypatch.setenv("MS_LOCK_TIMEOUT", "5")


def make_data(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes (portable SplitMix64)."""
    return splitmix64_bytes(seed, size)


@pytest.fixture
def data() -> type:
    """Access to ``make_data`` from tests without importing conftest."""

    class D:
        make = staticmethod(make_data)

    return D


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[object]:
    """A fresh repository with tiny chunks and packs, its working tree in tmp_path/work."""
    from modelstore import Repository

    r = Repository.init(tmp_path / "work", chunker=SMALL_CHUNKS, pack_size=SMALL_PACK)
    try:
        yield r
    finally:
        r.close()
