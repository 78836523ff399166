"""Layer 4.5: the registry's aliases (``production``, ``staging``...): movable names for commits.

An alias is the ref ``refs/aliases/NAME``. It moves by compare-and-swap and every move is in
the reflog with who and why, so ``history`` is the audit trail of what was deployed when, and
``rollback`` moves it back to its previous target in one step. Any revision argument accepts
``@NAME`` for an alias.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from modelstore import reflog, refs
from modelstore.errors import BadArgumentError, RefNotFoundError
from modelstore.ids import ObjectId
from modelstore.metadb import Txn
from modelstore.repository import Repository

__all__ = ["AliasInfo", "alias_history", "get_alias", "list_aliases", "rollback", "set_alias"]

PREFIX = "refs/aliases/"


@dataclass(frozen=True)
class AliasInfo:
    """An alias, where it points, and its last move."""

    name: str
    commit: str
    user: str | None = None
    time_ns: int | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _ref(name: str) -> str:
    name = name.removeprefix("@")
    if not name or name.startswith("-"):
        raise BadArgumentError(f"invalid alias name {name!r}")
    return refs.check_ref_name(PREFIX + name)


def _info(txn: Txn, ref: str, oid: bytes) -> AliasInfo:
    log = reflog.entries(txn, ref)
    last = log[-1] if log else None
    return AliasInfo(
        ref.removeprefix(PREFIX),
        oid.hex(),
        last.user if last else None,
        last.time_ns if last else None,
        last.message if last else None,
    )


def set_alias(repo: Repository, name: str, rev: str, message: str = "") -> AliasInfo:
    """Point alias ``name`` at ``rev`` (creating it), recording why."""
    ref = _ref(name)

    def fn(txn: Txn) -> AliasInfo:
        new = repo._resolve(txn, rev)
        _, old = refs.read_ref(txn, ref)
        repo._move_ref(txn, ref, old, new, "alias", message or f"set to {rev}")
        return _info(txn, ref, new)

    with repo._writing():
        result: AliasInfo = repo.db.write(fn)
    return result


def get_alias(repo: Repository, name: str) -> AliasInfo:
    """Where alias ``name`` points."""
    ref = _ref(name)
    with repo.db.read() as txn:
        _, oid = refs.read_ref(txn, ref)
        if oid is None:
            raise RefNotFoundError(f"no alias named {name.removeprefix('@')!r}")
        return _info(txn, ref, oid)


def list_aliases(repo: Repository) -> list[AliasInfo]:
    """Every alias."""
    with repo.db.read() as txn:
        return [_info(txn, n, oid) for n, oid, _ in refs.list_refs(txn, PREFIX) if oid]


def alias_history(repo: Repository, name: str) -> list[dict[str, Any]]:
    """Every move of the alias, newest first: old and new commit, who, when, why."""
    ref = _ref(name)
    with repo.db.read() as txn:
        log = reflog.entries(txn, ref)
    if not log:
        raise RefNotFoundError(f"no alias named {name.removeprefix('@')!r}")
    return reflog.newest_first(ref, log)


def rollback(repo: Repository, name: str, to: str | None = None, message: str = "") -> AliasInfo:
    """Move the alias back to the target it had before its current one (or to ``to``)."""
    ref = _ref(name)

    def fn(txn: Txn) -> AliasInfo:
        _, current = refs.read_ref(txn, ref)
        if current is None:
            raise RefNotFoundError(f"no alias named {name.removeprefix('@')!r}")
        if to is not None:
            target: ObjectId = repo._resolve(txn, to)
        else:
            # the most recent earlier target that differs from the current one
            earlier = [e.new for e in reversed(reflog.entries(txn, ref)) if e.new]
            previous = next((o for o in earlier if o != current), None)
            if previous is None:
                raise BadArgumentError(
                    f"alias {name.removeprefix('@')!r} has no earlier target to roll back to"
                )
            target = previous
        if txn.get("objects", target) is None:
            raise RefNotFoundError(
                f"the earlier target {target.hex()[:12]} of alias {name.removeprefix('@')!r} was "
                "garbage-collected (its reflog entry had expired); roll back with --to REV"
            )
        why = message or f"rollback from {current.hex()[:12]}"
        repo._move_ref(txn, ref, current, target, "rollback", why)
        return _info(txn, ref, target)

    with repo._writing():
        result: AliasInfo = repo.db.write(fn)
    return result
