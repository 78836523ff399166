"""Layer 5: ``ms://``, an fsspec filesystem that reads any version of a repository in place.

``pandas.read_csv("ms:///data/exp@v1/data/train.csv")``, ``fsspec.open(...)``, pyarrow and
every other fsspec-aware reader get a seekable file that fetches and verifies only the chunks
they touch; nothing is checked out. fsspec finds this class through the ``fsspec.specs`` entry
point, so ``import modelstore`` stays free of fsspec.

URL grammar, ``ms://REPO[@REV][/PATH]``:

- ``REPO`` is the repository's folder (its working tree): ``ms:///abs/repo`` is absolute,
  ``ms://rel/repo`` is relative to the current directory.
- ``@REV`` is any revision ``ms`` accepts (``v1``, ``HEAD~1``, ``@production``, ``main@{1}``,
  a commit id). The separator is the first ``@`` whose left side is a repository folder (a
  folder holding ``.ms``), so ``@`` may appear in folder names, in revisions and in PATH. REV
  ends at the next ``/``; write a ``/`` inside REV as ``%2F`` (``ms:///repo@feature%2Fx/f``).
  REV is percent-decoded, nothing else is.
- Without ``@REV`` the repository is the nearest folder holding ``.ms`` along the path (as
  git finds ``.git``) and the version is ``HEAD``, or the ``rev=`` storage option.
- ``fsspec.filesystem("ms", repo=PATH, rev=REV)`` fixes both: its paths are plain paths inside
  the repository (``data/train.csv``).

Errors: anything the URL names that is not there (the repository, the revision, the path)
raises ``FileNotFoundError``, which is what fsspec and pandas callers handle; each is also the
matching ``MsError`` (``NotARepositoryError``, ``RefNotFoundError``, ``PathError``). The
filesystem is read-only: write modes and mutations raise ``ReadOnlyError`` (a
``PermissionError``). ``find``/``glob`` of a missing path are empty, as elsewhere in fsspec.

One ``Repository`` is opened per folder per process and reused (``close_repositories``; at
exit they are closed, which also writes out chunks a lazy clone fetched).
"""

from __future__ import annotations

import atexit
import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from fsspec import AbstractFileSystem

from modelstore import lineage as _lineage
from modelstore.errors import BadArgumentError, NotARepositoryError, PathError, RefNotFoundError
from modelstore.metadb import Txn
from modelstore.objects import TreeEntry
from modelstore.repository import MS_DIR, ChunkedFile, Repository

__all__ = [
    "BLOCK_SIZE",
    "IsADirectoryPathError",
    "MsFile",
    "MsFileSystem",
    "PathNotFoundError",
    "ReadOnlyError",
    "RepositoryNotFoundError",
    "RevisionNotFoundError",
    "close_repositories",
    "split_ms_path",
]

#: read-ahead of an open file: one maximum-size chunk of the default chunker
BLOCK_SIZE = 256 * 1024


class RepositoryNotFoundError(NotARepositoryError, FileNotFoundError):
    """No modelstore repository along this path."""


class RevisionNotFoundError(RefNotFoundError, FileNotFoundError):
    """Unknown revision."""


class PathNotFoundError(PathError, FileNotFoundError):
    """No such file or folder in this revision."""


class IsADirectoryPathError(PathError, IsADirectoryError):
    """A folder was opened as a file."""


class ReadOnlyError(BadArgumentError, PermissionError):
    """ms:// is read-only: record new versions with `ms add` and `ms commit`."""


def split_ms_path(
    path: str, is_repo: Callable[[str], bool] = _lineage.is_repo
) -> tuple[str, str | None, str]:
    """``REPO[@REV][/PATH]`` → ``(REPO, REV as written, PATH)``; see ``lineage.split_ms_path``.

    Raises:
        RepositoryNotFoundError: If no prefix of the path is a repository folder.
        BadArgumentError: If ``@`` is followed by an empty revision.
    """
    try:
        return _lineage.split_ms_path(path, is_repo)
    except NotARepositoryError as exc:
        raise RepositoryNotFoundError(exc.message) from None


_repos: dict[str, Repository] = {}
_repos_lock = threading.Lock()


def _reset_lock() -> None:
    global _repos_lock
    _repos_lock = threading.Lock()  # a fork may have happened while another thread held it


os.register_at_fork(after_in_child=_reset_lock)


def _repository(folder: str) -> Repository:
    """The process-wide open repository of ``folder`` (one LMDB environment per folder)."""
    key = os.path.realpath(folder)
    with _repos_lock:
        r = _repos.get(key)
        if r is None:
            if not _repos:
                atexit.register(close_repositories)
            r = Repository.open(key, search_parents=False)
            _repos[key] = r
        return r


def close_repositories() -> None:
    """Close every repository ``ms://`` opened; later reads open them again."""
    with _repos_lock:
        repos = list(_repos.values())
        _repos.clear()
    for r in repos:
        r.close()
    atexit.unregister(close_repositories)


@dataclass(frozen=True)
class _Loc:
    """A parsed path: the repository, the revision to resolve, the path inside, the name base."""

    repo: Repository
    rev: str
    path: str
    base: str  # what names start with: "REPO@REV", "REPO", or "" for a fixed repository

    def name(self, inner: str) -> str:
        """The fsspec name of ``inner`` (a path inside the repository)."""
        if not self.base:
            return inner
        return f"{self.base}/{inner}" if inner else self.base


class MsFile(io.BufferedReader):
    """A read-only, seekable file over one stored file version (``ChunkedFile`` + buffer)."""

    def __init__(self, raw: ChunkedFile, path: str, buffer_size: int = BLOCK_SIZE) -> None:
        super().__init__(raw, buffer_size)
        self.path = path
        self.size = raw.size


class MsFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """fsspec filesystem for ``ms://REPO[@REV]/PATH`` (see the module docstring).

    Args:
        repo: Fix the repository (a folder or an open ``Repository``); paths are then inside it.
        rev: The revision for paths that name none (default ``HEAD``).
        **storage_options: Passed to fsspec.
    """

    protocol = "ms"
    root_marker = ""

    def __init__(
        self,
        repo: str | os.PathLike[str] | Repository | None = None,
        rev: str | None = None,
        **storage_options: Any,
    ) -> None:
        super().__init__(repo=repo, rev=rev, **storage_options)
        self._fixed = repo
        self._rev = rev

    # -- locating ---------------------------------------------------------------------------
    def _locate(self, path: str) -> _Loc:
        p = self._strip_protocol(path)
        if self._fixed is not None:
            r = self._fixed
            if not isinstance(r, Repository):
                folder = os.fspath(r)
                if not _lineage.is_repo(folder):
                    raise RepositoryNotFoundError(
                        f"{folder}: not a modelstore repository (no {MS_DIR} folder)"
                    )
                r = _repository(folder)
            return _Loc(r, self._rev or "HEAD", p.strip("/"), "")
        repo, rev, inner = split_ms_path(p)
        if rev is None:
            return _Loc(_repository(repo), self._rev or "HEAD", inner, repo)
        return _Loc(_repository(repo), unquote(rev), inner, f"{repo}@{rev}")

    def _entry(self, loc: _Loc, txn: Txn) -> tuple[bytes, TreeEntry]:
        """``(commit id, entry)`` of a located path inside one read transaction."""
        r = loc.repo
        try:
            cid = r.resolve(loc.rev, txn)
        except RefNotFoundError as exc:
            raise RevisionNotFoundError(f"{r.workdir}: {exc.message}") from None
        e = r.lookup(cid, loc.path, txn)
        if e is None:
            raise PathNotFoundError(f"{loc.path}: not in {loc.rev} of {r.workdir}")
        return cid, e

    @staticmethod
    def _info(name: str, cid: bytes, e: TreeEntry) -> dict[str, Any]:
        return {
            "name": name,
            "size": 0 if e.is_dir else e.size,
            "type": "directory" if e.is_dir else "file",
            "mode": e.mode,
            "id": e.id.hex(),  # the manifest or tree id: equal ids, equal content
            "commit": cid.hex(),
        }

    # -- listing ----------------------------------------------------------------------------
    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """Name, size, type (``file``/``directory``), mode, content id and resolved commit."""
        loc = self._locate(path)
        with loc.repo.db.read() as txn:
            cid, e = self._entry(loc, txn)
        return self._info(loc.name(loc.path), cid, e)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """A folder's entries (or ``[file]`` for a file), sorted by name."""
        loc = self._locate(path)
        r = loc.repo
        with r.db.read() as txn:
            cid, e = self._entry(loc, txn)
            if not e.is_dir:
                out = [self._info(loc.name(loc.path), cid, e)]
            else:
                pre = f"{loc.path}/" if loc.path else ""
                out = [
                    self._info(loc.name(pre + te.name), cid, te)
                    for te in r.get_tree(e.id, txn).entries
                ]
        out.sort(key=lambda d: d["name"])
        return out if detail else [d["name"] for d in out]

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Everything below ``path``, walked in one read transaction (``glob`` uses this)."""
        if maxdepth is not None and maxdepth < 1:
            raise ValueError("maxdepth must be at least 1")
        loc = self._locate(path)
        r = loc.repo
        out: dict[str, dict[str, Any]] = {}
        with r.db.read() as txn:
            try:
                cid, e = self._entry(loc, txn)
            except PathNotFoundError:
                return {} if detail else []
            if not e.is_dir:
                out[loc.name(loc.path)] = self._info(loc.name(loc.path), cid, e)
            else:
                if withdirs and loc.path:
                    out[loc.name(loc.path)] = self._info(loc.name(loc.path), cid, e)
                stack = [(f"{loc.path}/" if loc.path else "", e.id, 1)]
                while stack:
                    pre, tree_id, depth = stack.pop()
                    for te in r.get_tree(tree_id, txn).entries:
                        name = loc.name(pre + te.name)
                        if te.is_dir:
                            if withdirs:
                                out[name] = self._info(name, cid, te)
                            if maxdepth is None or depth < maxdepth:
                                stack.append((f"{pre}{te.name}/", te.id, depth + 1))
                        else:
                            out[name] = self._info(name, cid, te)
        names = sorted(out)
        return {n: out[n] for n in names} if detail else names

    def ukey(self, path: str) -> str:
        """The content id: equal for equal content in any revision."""
        return str(self.info(path)["id"])

    def checksum(self, path: str) -> int:
        """The content id as an int (what fsspec's caches compare)."""
        return int(self.ukey(path), 16)

    # -- reading ----------------------------------------------------------------------------
    def _chunked(self, path: str) -> ChunkedFile:
        loc = self._locate(path)
        r = loc.repo
        with r.db.read() as txn:
            cid, e = self._entry(loc, txn)
            if e.is_dir:
                raise IsADirectoryPathError(f"{loc.path or '/'}: is a folder in {loc.rev}")
            m = r.get_manifest(e.id, txn)
        return ChunkedFile(r.store, m, f"{loc.path} in commit {cid.hex()[:12]}", r.get_chunk_list)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> MsFile:
        """A seekable read-only file; chunks are fetched and verified as they are read."""
        if mode != "rb":
            raise ReadOnlyError(f"cannot open {path} with mode {mode!r}: {ReadOnlyError.__doc__}")
        raw = self._chunked(path)
        return MsFile(raw, self._strip_protocol(path), block_size or BLOCK_SIZE)

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """Bytes ``[start, end)`` of a file (negative values count from its end)."""
        with self._chunked(path) as f:
            size = f.size
            lo = 0 if start is None else (start if start >= 0 else size + start)
            hi = size if end is None else (end if end >= 0 else size + end)
            lo = min(max(lo, 0), size)
            hi = min(max(hi, lo), size)
            f.seek(lo)
            data = f.read(hi - lo)
        return data or b""

    # -- read-only --------------------------------------------------------------------------
    def _refuse(self, what: str, path: Any) -> None:
        raise ReadOnlyError(f"cannot {what} {path}: {ReadOnlyError.__doc__}")

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:  # noqa: D102
        self._refuse("create", path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:  # noqa: D102
        self._refuse("create", path)

    def rmdir(self, path: str) -> None:  # noqa: D102
        self._refuse("remove", path)

    def _rm(self, path: str) -> None:
        self._refuse("remove", path)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:  # noqa: D102
        self._refuse("copy to", path2)
