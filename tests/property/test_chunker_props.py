"""Property tests: the C chunker agrees with the pure-Python reference and with itself."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelstore.chunker import Chunker, ChunkerParams, cut_points, reference_cut_points

# Explicit per-test settings (no global profile is loaded here, so a tests/conftest.py profile
# can still set the defaults for other modules): ~200 examples keeps this file to a few seconds.
PROPS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SMALL = ChunkerParams(min_size=256, avg_size=1024, max_size=4096)

MAX_LEN = 64 * 1024

# Random bytes, plus low-entropy / repetitive data that reaches the mask_l region and max cuts.
data_st = st.one_of(
    st.binary(max_size=MAX_LEN),
    st.builds(
        lambda unit, n: (unit * n)[:MAX_LEN],
        st.binary(min_size=1, max_size=32),
        st.integers(min_value=0, max_value=MAX_LEN),
    ),
    st.builds(
        lambda a, b: (a + bytes(b))[:MAX_LEN],
        st.binary(max_size=8192),
        st.integers(min_value=0, max_value=MAX_LEN),
    ),
)


@st.composite
def params_st(draw: st.DrawFn) -> ChunkerParams:
    avg_bits = draw(st.integers(min_value=6, max_value=11))
    avg = 1 << avg_bits
    mn = draw(st.integers(min_value=64, max_value=avg))
    mx = draw(st.integers(min_value=avg, max_value=4 * avg))
    seed = draw(st.integers(min_value=0, max_value=2**64 - 1))
    return ChunkerParams(min_size=mn, avg_size=avg, max_size=mx, gear_seed=seed)


def feed_split(data: bytes, params: ChunkerParams, splits: list[int]) -> list[int]:
    """Feed data split at the given points; return absolute chunk ends."""
    c = Chunker(params)
    cuts = sorted({min(s, len(data)) for s in splits})
    ends: list[int] = []
    prev = 0
    for off in [*cuts, len(data)]:
        block = data[prev:off]
        got = c.feed(block)
        assert got == sorted(got)
        assert all(0 < e <= len(block) for e in got)
        ends.extend(prev + e for e in got)
        prev = off
    rest = c.finish()
    if rest:
        ends.append((ends[-1] if ends else 0) + rest)
    return ends


def check_chunks(data: bytes, params: ChunkerParams, ends: list[int]) -> None:
    starts = [0, *ends][: len(ends)]
    chunks = [data[a:b] for a, b in zip(starts, ends, strict=True)]
    assert b"".join(chunks) == data
    if data:
        assert ends[-1] == len(data)
    assert all(params.min_size <= len(c) <= params.max_size for c in chunks[:-1])
    assert all(0 < len(c) <= params.max_size for c in chunks)


@PROPS
@given(data=data_st, splits=st.lists(st.integers(min_value=0, max_value=MAX_LEN), max_size=20))
def test_split_feeding_matches_reference(data: bytes, splits: list[int]) -> None:
    expected = reference_cut_points(data, SMALL)
    assert cut_points(data, SMALL) == expected
    assert feed_split(data, SMALL, splits) == expected
    check_chunks(data, SMALL, expected)


@PROPS
@given(
    params=params_st(),
    data=data_st,
    splits=st.lists(st.integers(min_value=0, max_value=MAX_LEN), max_size=10),
)
def test_arbitrary_params_match_reference(
    params: ChunkerParams, data: bytes, splits: list[int]
) -> None:
    data = data[: 16 * params.max_size]  # keep the pure-Python reference quick
    expected = reference_cut_points(data, params)
    assert feed_split(data, params, splits) == expected
    check_chunks(data, params, expected)
