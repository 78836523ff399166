"""Layer 3: the reflog: an append-only, hash-chained record of every move of every ref.

Each entry records the old and new commit, when, who, which command and why, plus the hash of
the ref's previous entry, so editing or deleting an entry in the middle of a log breaks the
chain and ``ms verify`` reports it. Entries live in the ``reflog`` sub-database under
``ref name || 0x00 || sequence (u64 big-endian)`` and are written in the same transaction as
the ref move they record (docs/FORMAT.md §11).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from blake3 import blake3

from modelstore import codec
from modelstore.errors import FormatError
from modelstore.ids import ID_LEN, ObjectId
from modelstore.metadb import Txn

__all__ = [
    "REFLOG_CONTEXT",
    "ChainProblem",
    "ReflogEntry",
    "append",
    "entries",
    "newest_first",
    "user_name",
    "verify_chains",
]

REFLOG_CONTEXT = "modelstore 2026-11 reflog entry v1"
ZERO = bytes(ID_LEN)
_SEP = b"\x00"


def user_name() -> str:
    """Who is acting: ``$MS_AUTHOR``, else ``user@host``."""
    name = os.environ.get("MS_AUTHOR")
    if name:
        return name
    import getpass

    return f"{getpass.getuser()}@{os.uname().nodename}"


@dataclass(frozen=True)
class ReflogEntry:
    """One move of one ref."""

    old: ObjectId | None
    new: ObjectId | None
    time_ns: int
    user: str
    command: str
    message: str
    prev: bytes
    VERSION = 1

    def encode(self) -> bytes:
        """Canonical encoding (what the chain hashes)."""
        return codec.encode(
            [
                self.VERSION,
                self.old,
                self.new,
                self.time_ns,
                self.user,
                self.command,
                self.message,
                self.prev,
            ]
        )

    def digest(self) -> bytes:
        """This entry's hash: the next entry's ``prev``."""
        return blake3(self.encode(), derive_key_context=REFLOG_CONTEXT).digest()

    @classmethod
    def decode(cls, raw: bytes) -> ReflogEntry:
        """Parse a stored entry."""
        v = codec.decode(raw)

        def oid(x: object) -> ObjectId | None:
            if x is None:
                return None
            if isinstance(x, bytes) and len(x) == ID_LEN:
                return ObjectId(x)
            raise FormatError("malformed reflog entry: bad commit id")

        if not (isinstance(v, list) and len(v) == 8 and v[0] == cls.VERSION):
            raise FormatError("malformed reflog entry")
        _, old, new, t, user, cmd, msg, prev = v
        if not (
            isinstance(t, int)
            and isinstance(user, str)
            and isinstance(cmd, str)
            and isinstance(msg, str)
            and isinstance(prev, bytes)
            and len(prev) == ID_LEN
        ):
            raise FormatError("malformed reflog entry")
        e = cls(oid(old), oid(new), t, user, cmd, msg, prev)
        if e.encode() != raw:
            raise FormatError("malformed reflog entry: not in canonical form")
        return e


def _key(ref: str, seq: int) -> bytes:
    return ref.encode() + _SEP + seq.to_bytes(8, "big")


def append(
    txn: Txn,
    ref: str,
    old: ObjectId | None,
    new: ObjectId | None,
    command: str,
    message: str = "",
    *,
    user: str | None = None,
    when_ns: int | None = None,
) -> ReflogEntry:
    """Record a move of ``ref`` (in the caller's write transaction)."""
    import time

    last = txn.last("reflog", ref.encode() + _SEP)
    if last is None:
        seq, prev = 0, ZERO
    else:
        seq = int.from_bytes(last[0][-8:], "big") + 1
        prev = ReflogEntry.decode(last[1]).digest()
    e = ReflogEntry(
        old,
        new,
        time.time_ns() if when_ns is None else when_ns,
        user or user_name(),
        command,
        message,
        prev,
    )
    txn.put("reflog", _key(ref, seq), e.encode())
    return e


def newest_first(ref: str, log: list[ReflogEntry]) -> list[dict[str, Any]]:
    """A ref's log as JSON-ready dicts, newest first: entry N is ``REF@{N}``."""
    return [
        {
            "ref": ref,
            "index": i,
            "old": e.old.hex() if e.old else None,
            "new": e.new.hex() if e.new else None,
            "time_ns": e.time_ns,
            "user": e.user,
            "command": e.command,
            "message": e.message,
            "hash": e.digest().hex(),
        }
        for i, e in enumerate(reversed(log))
    ]


def entries(txn: Txn, ref: str) -> list[ReflogEntry]:
    """A ref's log, oldest first."""
    return [ReflogEntry.decode(v) for _, v in txn.items("reflog", ref.encode() + _SEP)]


@dataclass(frozen=True)
class ChainProblem:
    """A break in a ref's hash chain."""

    ref: str
    seq: int
    detail: str


def verify_chains(txn: Txn) -> tuple[int, list[ChainProblem]]:
    """Check every ref's chain; return ``(entries checked, problems)``."""
    problems: list[ChainProblem] = []
    n = 0
    prev_ref: str | None = None
    expect_prev = ZERO
    expect_seq = 0
    for k, v in txn.items("reflog"):
        # key = ref name || 0x00 || 8-byte sequence (which may itself contain zero bytes)
        ref = k[:-9].decode("utf-8", "replace")
        seq = int.from_bytes(k[-8:], "big") if len(k) > 9 and k[-9] == 0 else -1
        if ref != prev_ref:
            prev_ref, expect_prev, expect_seq = ref, ZERO, 0
        n += 1
        if seq != expect_seq:
            problems.append(ChainProblem(ref, seq, f"entry {expect_seq} is missing"))
        try:
            e = ReflogEntry.decode(v)
        except FormatError as exc:
            problems.append(ChainProblem(ref, seq, exc.message))
            expect_prev, expect_seq = ZERO, seq + 1
            continue
        if e.prev != expect_prev:
            problems.append(
                ChainProblem(ref, seq, "hash chain broken: an earlier entry was edited or removed")
            )
        expect_prev, expect_seq = e.digest(), seq + 1
    return n, problems
