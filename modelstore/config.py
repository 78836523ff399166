"""Layer 1: the repository config: format version, features, repo id, hash and chunker params.

The config is a canonical msgpack map stored in the metadata DB (``meta`` sub-db, key
``config``). The format version also sits in a plain ``.ms/FORMAT`` file, read before LMDB is
opened, so that a future layout can be refused before anything touches it. Readers refuse an
unknown ``format_version`` and any unknown ``incompat`` feature; unknown ``ro_compat`` features
allow reading but not writing; unknown ``compat`` features are ignored (borg's feature flags,
git's ``repositoryformatversion``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from modelstore import codec
from modelstore.chunker import FEATURE_TENSOR_CHUNKING, ChunkerParams
from modelstore.compress import FEATURE_DELTA, FEATURE_PLANES, MAX_DELTA_DEPTH
from modelstore.errors import FormatError, UnsupportedFormatError

__all__ = [
    "DEFAULT_DELTA_DEPTH",
    "DEFAULT_PACK_SIZE",
    "FORMAT_FILE_TEXT",
    "FORMAT_VERSION",
    "KNOWN_COMPAT",
    "KNOWN_INCOMPAT",
    "KNOWN_RO_COMPAT",
    "RepoConfig",
    "parse_format_file",
]

FORMAT_VERSION = 1
FORMAT_FILE_TEXT = f"modelstore repository format {FORMAT_VERSION}\n"
#: ``codec-planes-v1``: stored chunks may use codec tag 2, byte planes (docs/FORMAT.md §8)
#: ``codec-xor-delta-v1``: stored chunks may use codec tag 3, XOR deltas (docs/FORMAT.md §8.2)
KNOWN_INCOMPAT: frozenset[str] = frozenset({FEATURE_PLANES, FEATURE_DELTA})
KNOWN_RO_COMPAT: frozenset[str] = frozenset()
#: ``chunking-tensor-aware-v1``: safetensors and GGUF files are cut at tensor starts (§5.5)
KNOWN_COMPAT: frozenset[str] = frozenset({FEATURE_TENSOR_CHUNKING})
#: ~64 MiB packs: few enough files for millions of chunks, small enough to upload in parts.
DEFAULT_PACK_SIZE = 64 << 20
#: a full copy of a tensor chunk after at most this many deltas in a row (docs/FORMAT.md §8.2)
DEFAULT_DELTA_DEPTH = 2


def parse_format_file(text: str) -> int:
    """Return the version in a FORMAT file, refusing anything else."""
    prefix = "modelstore repository format "
    if not text.startswith(prefix):
        raise FormatError("the .ms/FORMAT file is damaged")
    try:
        version = int(text[len(prefix) :].strip())
    except ValueError:
        raise FormatError("the .ms/FORMAT file is damaged") from None
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"repository format {version} is not supported by this ms "
            f"(it reads format {FORMAT_VERSION}); upgrade modelstore"
        )
    return version


@dataclass
class RepoConfig:
    """The repository config (see docs/FORMAT.md §1 and §5)."""

    repo_id: str = field(default_factory=lambda: secrets.token_hex(16))
    format_version: int = FORMAT_VERSION
    hash: str = "blake3"
    chunker: ChunkerParams = field(default_factory=ChunkerParams)
    pack_size: int = DEFAULT_PACK_SIZE
    delta_depth: int = DEFAULT_DELTA_DEPTH
    incompat: list[str] = field(default_factory=list)
    ro_compat: list[str] = field(default_factory=list)
    compat: list[str] = field(default_factory=list)
    remotes: dict[str, dict[str, Any]] = field(default_factory=dict)
    user: dict[str, Any] = field(default_factory=dict)

    def to_value(self) -> dict[str, Any]:
        """The map stored in the DB."""
        return {
            "format_version": self.format_version,
            "repo_id": self.repo_id,
            "hash": self.hash,
            "chunker": self.chunker.to_dict(),
            "pack_size": self.pack_size,
            "delta_depth": self.delta_depth,
            "features": {
                "incompat": sorted(self.incompat),
                "ro_compat": sorted(self.ro_compat),
                "compat": sorted(self.compat),
            },
            "remotes": self.remotes,
            "user": self.user,
        }

    def encode(self) -> bytes:
        """Canonical bytes."""
        return codec.encode(self.to_value())

    @classmethod
    def decode(cls, data: bytes, *, for_write: bool = False) -> RepoConfig:
        """Parse and check a stored config; refuse unknown versions and features."""
        v = codec.decode(data)
        if not isinstance(v, dict):
            raise FormatError("repository config is not a map")
        try:
            version = v["format_version"]
            if type(version) is not int or version != FORMAT_VERSION:
                raise UnsupportedFormatError(
                    f"repository format {version!r} is not supported (upgrade modelstore)"
                )
            feats = v.get("features", {})
            if not isinstance(feats, dict):
                raise FormatError("repository config is malformed: features is not a map")
            incompat = list(feats.get("incompat", []))
            ro_compat = list(feats.get("ro_compat", []))
            if not all(isinstance(f, str) for f in incompat + ro_compat):
                raise FormatError("repository config is malformed: feature names must be str")
            unknown = sorted(set(incompat) - KNOWN_INCOMPAT)
            if unknown:
                raise UnsupportedFormatError(
                    f"repository uses features this ms does not know: {', '.join(unknown)} "
                    "(upgrade modelstore)"
                )
            unknown_ro = sorted(set(ro_compat) - KNOWN_RO_COMPAT)
            if unknown_ro and for_write:
                raise UnsupportedFormatError(
                    f"repository uses features that make it read-only for this ms: "
                    f"{', '.join(unknown_ro)} (upgrade modelstore to write to it)"
                )
            if v.get("hash") != "blake3":
                raise UnsupportedFormatError(f"unknown hash {v.get('hash')!r}")
            pack_size = v["pack_size"]
            if type(pack_size) is not int or pack_size <= 0:
                raise FormatError("repository config is malformed: pack_size")
            depth = v.get("delta_depth", DEFAULT_DELTA_DEPTH)
            if type(depth) is not int or not 0 <= depth <= MAX_DELTA_DEPTH:
                raise FormatError(
                    f"repository config is malformed: delta_depth must be 0..{MAX_DELTA_DEPTH}"
                )
            remotes, user = v.get("remotes", {}), v.get("user", {})
            if not isinstance(remotes, dict) or not isinstance(user, dict):
                raise FormatError("repository config is malformed: remotes and user must be maps")
            return cls(
                repo_id=str(v["repo_id"]),
                format_version=version,
                hash="blake3",
                chunker=ChunkerParams.from_dict(v["chunker"]),
                pack_size=pack_size,
                delta_depth=depth,
                incompat=incompat,
                ro_compat=ro_compat,
                compat=list(feats.get("compat", [])),
                remotes=dict(remotes),
                user=dict(user),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise FormatError(f"repository config is malformed: {exc}") from None
