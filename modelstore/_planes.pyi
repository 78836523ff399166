"""Type stub for the native byte-plane mover (modelstore/_planes.c)."""

from typing_extensions import Buffer

def join(planes: tuple[Buffer, ...], out: Buffer, base: Buffer | None, /) -> None: ...
def split(src: Buffer, planes: tuple[Buffer, ...], /) -> None: ...

def decode_many(
    jobs: list[tuple[list[tuple[int, bytes | memoryview]], int]], /
) -> list[bytes | str]: ...

have_zstd: int
