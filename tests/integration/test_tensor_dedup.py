"""Tensor-aware chunking dedups unchanged tensors wherever they move (issue 7 §1 targets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_tensor_dedup import TARGETS, run_once

SIZE = 96 << 20


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, int, float]]:
    """One ~96 MiB bf16 checkpoint, committed, then each edit added on top of it."""
    root: Path = tmp_path_factory.mktemp("tdedup")
    return run_once(root, SIZE, tensor_aware=True)


@pytest.mark.parametrize("edit", ["insert", "append", "reorder"])
def test_edit_stores_little(results: dict[str, tuple[int, int, float]], edit: str) -> None:
    added, ref, _ = results[edit]
    assert added / ref <= TARGETS[edit], f"{edit}: {added} bytes added for {ref}"
