"""Layer 3: refs: names for commits, with compare-and-swap updates inside one transaction.

A ref is ``HEAD`` or a name under ``refs/`` (``refs/heads/main``, ``refs/tags/v1``). Values are
framed with a leading type byte: ``0x01`` + 32-byte commit id (direct), or ``0x02`` + UTF-8 ref
name (symbolic, as ``HEAD`` is when a branch is checked out). ``set_if_equals`` is the only way
to move a ref: it reads and writes in the caller's write transaction, so a ref CAS and the
objects it points to commit together or not at all (dulwich's ``set_if_equals``).
"""

from __future__ import annotations

import re

from modelstore.errors import BadArgumentError, FormatError, RefConflictError
from modelstore.ids import ID_LEN, ObjectId
from modelstore.metadb import Txn

__all__ = [
    "DEFAULT_BRANCH",
    "HEAD",
    "branch_ref",
    "check_ref_name",
    "delete_ref",
    "list_refs",
    "read_ref",
    "resolve_ref",
    "set_if_equals",
    "set_symbolic",
]

HEAD = "HEAD"
DEFAULT_BRANCH = "main"
_DIRECT = 1
_SYMBOLIC = 2
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_ref_name(name: str) -> str:
    """Validate a full ref name with git's check-ref-format rules; return it."""
    if name == HEAD:
        return name
    bad = (
        not name.startswith("refs/")
        or len(name) > 255
        or _BAD_CHARS.search(name) is not None
        or ".." in name
        or "@{" in name
        or name.endswith((".", "/"))
        or "//" in name
        or any(p.startswith(".") or p.endswith(".lock") or not p for p in name.split("/"))
        or not _utf8(name)
    )
    if bad:
        raise BadArgumentError(f"invalid ref name {name!r}")
    return name


def branch_ref(branch: str) -> str:
    """The full ref name of a branch, validated."""
    if branch.startswith("refs/"):
        return check_ref_name(branch)
    if not branch or branch.startswith("-") or branch == HEAD:
        raise BadArgumentError(f"invalid branch name {branch!r}")
    return check_ref_name(f"refs/heads/{branch}")


def _decode(name: str, raw: bytes) -> tuple[int, bytes]:
    if raw and raw[0] == _DIRECT and len(raw) == 1 + ID_LEN:
        return _DIRECT, raw[1:]
    if raw and raw[0] == _SYMBOLIC and len(raw) > 1:
        return _SYMBOLIC, raw[1:]
    raise FormatError(f"ref {name} has a malformed value")


def read_ref(txn: Txn, name: str) -> tuple[str | None, ObjectId | None]:
    """Return ``(symbolic_target, None)`` or ``(None, commit_id)``; ``(None, None)`` if absent."""
    raw = txn.get("refs", name.encode())
    if raw is None:
        return None, None
    kind, body = _decode(name, raw)
    if kind == _SYMBOLIC:
        return body.decode("utf-8", "replace"), None
    return None, ObjectId(body)


def resolve_ref(txn: Txn, name: str) -> tuple[str, ObjectId | None]:
    """Follow symbolic refs; return ``(final ref name, commit id or None if unborn)``."""
    seen: set[str] = set()
    while True:
        if name in seen or len(seen) > 8:
            raise FormatError(f"symbolic ref loop at {name}")
        seen.add(name)
        target, oid = read_ref(txn, name)
        if target is None:
            return name, oid
        name = target


def set_if_equals(txn: Txn, name: str, old: ObjectId | None, new: ObjectId) -> None:
    """Point ``name`` (followed through symbolic refs) at ``new`` if it now holds ``old``.

    ``old`` is None for "must not exist yet". Raises ``RefConflictError`` if the ref moved.
    """
    final, current = resolve_ref(txn, name)
    check_ref_name(final)
    if current != old:
        have = current.hex()[:12] if current else "nothing"
        raise RefConflictError(f"{final} moved to {have} while this operation ran; retry it")
    txn.put("refs", final.encode(), bytes([_DIRECT]) + new)


def set_symbolic(txn: Txn, name: str, target: str) -> None:
    """Make ``name`` a symbolic ref to ``target`` (e.g. HEAD → refs/heads/main)."""
    check_ref_name(name)
    check_ref_name(target)
    txn.put("refs", name.encode(), bytes([_SYMBOLIC]) + target.encode())


def delete_ref(txn: Txn, name: str, old: ObjectId | None = None) -> bool:
    """Delete a ref; with ``old``, only if it still holds ``old``."""
    if old is not None:
        _, current = read_ref(txn, name)
        if current != old:
            raise RefConflictError(f"{name} moved while this operation ran; retry it")
    return txn.delete("refs", name.encode())


def list_refs(txn: Txn, prefix: str = "refs/") -> list[tuple[str, ObjectId | None, str | None]]:
    """List ``(name, commit id, symbolic target)`` for refs under ``prefix``."""
    out: list[tuple[str, ObjectId | None, str | None]] = []
    for k, v in txn.items("refs", prefix.encode()):
        name = k.decode("utf-8", "replace")
        kind, body = _decode(name, v)
        if kind == _DIRECT:
            out.append((name, ObjectId(body), None))
        else:
            out.append((name, None, body.decode("utf-8", "replace")))
    return out
