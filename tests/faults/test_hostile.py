"""Hostile input: crafted repositories, malicious remotes and ``ms serve`` clients.

Objects are crafted below the encoders (raw msgpack bytes written into LMDB with the ids they
hash to, so only the structure is wrong), delivered three ways: straight into a repository,
through a directory remote (``ms clone``/``ms fetch``), and through ``ms serve``. Every case
is refused with a ``FormatError`` (or another documented ``MsError``), and nothing is ever
written outside the working tree: a sentinel listing of everything around it must not change.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import zstandard
from blake3 import blake3

from modelstore import Repository, api, codec, refs
from modelstore.backend import LocalBackend
from modelstore.chunkstore import CHUNK_LOC, decode_loc
from modelstore.errors import (
    BadArgumentError,
    CorruptObjectError,
    FormatError,
    MsError,
    ObjectNotFoundError,
    PathError,
)
from modelstore.ids import object_id
from modelstore.objects import MAX_SEGMENTS, SEGMENT_CHUNKS, encode_object
from modelstore.pack import FOOTER
from modelstore.sync import REMOTE_FORMAT
from modelstore.verify import verify
from tests.conftest import make_data

pytestmark = pytest.mark.faults

KIND = {"manifest": 1, "tree": 2, "commit": 3, "chunklist": 4, "tag": 5}
FILE, DIR = 1, 2


# -- crafting ------------------------------------------------------------------------------------


def craft(kind: str, value: Any = None, *, body: bytes | None = None) -> tuple[bytes, bytes]:
    """``(id, stored)`` of an object whose bytes are ``value`` encoded as given (no validation)."""
    enc = codec.encode(value) if body is None else body
    return object_id(kind, enc), bytes([KIND[kind]]) + enc


def tree_of(*entries: list[Any]) -> tuple[bytes, bytes]:
    return craft("tree", [1, list(entries)])


def commit_of(tree_id: bytes, message: str = "crafted") -> tuple[bytes, bytes]:
    return craft("commit", [1, tree_id, [], "evil@example", 1_700_000_000, 0, message, {}])


def store(repo: Repository, *objs: tuple[bytes, bytes], branch: str | None = None) -> None:
    """Write raw objects into the repository (the last one is the branch's commit)."""

    def fn(txn: Any) -> None:
        for oid, stored in objs:
            txn.put("objects", oid, stored)
        if branch is not None:
            refs.set_if_equals(txn, f"refs/heads/{branch}", None, objs[-1][0])

    repo.db.write(fn)


def snapshot(root: Path, skip: Path) -> set[str]:
    """Every path under ``root`` except below ``skip``: what must never change."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip:
            dirnames.clear()
            continue
        out |= {os.path.join(dirpath, n) for n in dirnames + filenames}
    return out


def ms(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelstore.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def one_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture
def base(tmp_path: Path) -> Iterator[tuple[Repository, bytes, Path]]:
    """A repository with one real file (its manifest id is reused by crafted trees)."""
    (tmp_path / "sentinel").mkdir()
    r = Repository.init(tmp_path / "w")
    (r.workdir / "real.txt").write_bytes(b"real\n")
    r.add([str(r.workdir / "real.txt")])
    r.commit("real")
    entry = r.lookup(r.resolve("HEAD"), "real.txt")
    assert entry is not None
    yield r, entry.id, tmp_path
    r.close()


# -- crafted trees in a repository ---------------------------------------------------------------

BAD_NAMES = {
    "dotdot": "..",
    "dot": ".",
    "empty": "",
    "ms": ".ms",
    "MS": ".MS",
    "Ms": ".Ms",
    "slash": "a/b",
    "absolute": "/tmp/escape",
    "traversal": "../../escape",
    "backslash": "a\\b",
    "win-traversal": "..\\..\\escape",
    "nul": "a\x00b",
    "trailing-nul": "escape\x00",
    "newline": "x\ny",
    "del": "\x7f",
    "c1-control": "x\x85",
    "too-long": "a" * 256,
}


def bad_trees(mid: bytes) -> dict[str, tuple[list[tuple[bytes, bytes]], str]]:
    """Crafted root trees (with the objects under them) and the message they must give."""
    out: dict[str, tuple[list[tuple[bytes, bytes]], str]] = {}
    for key, name in BAD_NAMES.items():
        out[key] = ([tree_of([name, FILE, 0o644, 5, mid])], "path component")
        sub = tree_of([name, FILE, 0o644, 5, mid])
        out[f"{key}-nested"] = ([sub, tree_of(["sub", DIR, 0o040000, 0, sub[0]])], "path component")
    out["duplicate"] = ([tree_of(["a", FILE, 0o644, 5, mid], ["a", FILE, 0o644, 5, mid])],
                        "not sorted or duplicated")
    out["dir-and-file"] = ([tree_of(["a", FILE, 0o644, 5, mid], ["a", DIR, 0o040000, 0, mid])],
                           "not sorted or duplicated")
    out["unsorted"] = ([tree_of(["b", FILE, 0o644, 5, mid], ["a", FILE, 0o644, 5, mid])],
                       "not sorted or duplicated")
    out["symlink-mode"] = ([tree_of(["link", FILE, 0o120000, 5, mid])], "entry mode")
    out["setuid-mode"] = ([tree_of(["x", FILE, 0o4755, 5, mid])], "entry mode")
    out["unknown-kind"] = ([tree_of(["x", 3, 0o644, 5, mid])], "entry kind")
    out["short-id"] = ([tree_of(["x", FILE, 0o644, 5, mid[:31]])], "entry id")
    out["negative-size"] = ([tree_of(["x", FILE, 0o644, -1, mid])], "size")
    out["extra-field"] = ([tree_of(["x", FILE, 0o644, 5, mid, "more"])], "canonical")
    return out


@pytest.mark.parametrize("case", sorted(bad_trees(b"\0" * 32)))
def test_crafted_trees_are_refused_and_nothing_is_written(
    base: tuple[Repository, bytes, Path], case: str
) -> None:
    r, mid, tmp = base
    objs, why = bad_trees(mid)[case]
    commit = commit_of(objs[-1][0])
    store(r, *objs, commit, branch="evil")
    head = r.resolve("HEAD")
    before = snapshot(tmp, r.workdir)
    out = tmp / "sentinel" / "out"
    for attempt in (
        lambda: r.checkout("evil"),
        lambda: r.checkout("evil", force=True),
        lambda: r.checkout("evil", to=out),
        lambda: r.commit_files(commit[0]),
        lambda: api.ls(r, "evil", recursive=True),
    ):
        with pytest.raises(FormatError, match=why):
            attempt()
    assert snapshot(tmp, r.workdir) == before and not out.exists()
    assert sorted(os.listdir(r.workdir)) == [".ms", "real.txt"] and r.resolve("HEAD") == head
    problems = verify(r).problems
    assert problems and all(p.kind == "bad-object" for p in problems)
    assert any(commit[0].hex()[:12] in p.where for p in problems)


def test_cli_on_a_crafted_tree_is_one_line_exit_12(base: tuple[Repository, bytes, Path]) -> None:
    r, mid, tmp = base
    tree = tree_of(["..", FILE, 0o644, 5, mid])
    store(r, tree, commit_of(tree[0]), branch="evil")
    w = str(r.workdir)
    r.close()
    before = snapshot(tmp, Path(w))
    for args in (["checkout", "evil"], ["checkout", "--to", str(tmp / "sentinel" / "o"), "evil"],
                 ["ls", "-r", "evil"], ["cat", "evil:real.txt"], ["switch", "evil"]):
        line = one_line(ms("-C", w, *args), FormatError.exit_code)
        assert "'..'" in line, line
    assert one_line(ms("-C", w, "cat", "evil:x/../.."), 7).startswith("ms: error:")
    assert ms("-C", w, "verify").returncode == 13
    assert snapshot(tmp, Path(w)) == before


def test_trees_nested_too_deeply_are_refused(base: tuple[Repository, bytes, Path]) -> None:
    r, mid, tmp = base
    objs = [tree_of(["f", FILE, 0o644, 5, mid])]
    for _ in range(300):
        objs.append(tree_of(["d", DIR, 0o040000, 0, objs[-1][0]]))
    store(r, *objs, commit_of(objs[-1][0]), branch="deep")
    with pytest.raises(FormatError, match="nest too deeply"):
        r.checkout("deep")
    with pytest.raises(FormatError, match="nest too deeply"):
        r.checkout("deep", to=tmp / "sentinel" / "out")
    assert not (r.workdir / "d").exists() and not (tmp / "sentinel" / "out").exists()


# -- symlinks in the working tree --------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "file").write_bytes(b"precious\n")
    (d / "inner").mkdir()
    return d


def _two_commits(r: Repository) -> tuple[bytes, bytes]:
    """``sub/file`` and ``sub/inner/x`` in the first commit, gone in the second."""
    (r.workdir / "sub" / "inner").mkdir(parents=True)
    (r.workdir / "sub" / "file").write_bytes(b"tracked\n")
    (r.workdir / "sub" / "inner" / "x").write_bytes(b"x\n")
    (r.workdir / "top.txt").write_bytes(b"top\n")
    r.add([str(r.workdir)])
    c1 = r.commit("with sub")
    r.rm([str(r.workdir / "sub")])
    c2 = r.commit("without sub")
    return c1, c2


def _contents(d: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(d.rglob("*"))}


def test_checkout_never_writes_through_a_symlinked_folder(tmp_path: Path, outside: Path) -> None:
    r = Repository.init(tmp_path / "w")
    c1, _ = _two_commits(r)
    keep = _contents(outside)
    shutil.rmtree(r.workdir / "sub", ignore_errors=True)  # rm leaves empty folders
    os.symlink(outside, r.workdir / "sub")  # the commit has sub/file: sub now leads outside
    for force in (False, True):
        with pytest.raises(PathError, match="symlink"):
            r.checkout(c1.hex(), force=force)
    with pytest.raises(PathError, match="symlink"):
        r.checkout(c1.hex(), [str(r.workdir / "sub" / "file")], force=True)
    with pytest.raises(PathError, match="symlink"):
        r.restore([str(r.workdir / "sub" / "file")], source=c1.hex())
    to = tmp_path / "to"
    to.mkdir()
    os.symlink(outside, to / "sub")
    with pytest.raises(PathError, match="symlink"):
        r.checkout(c1.hex(), to=to)
    assert _contents(outside) == keep
    r.close()


def test_removing_tracked_files_never_follows_a_symlinked_folder(
    tmp_path: Path, outside: Path
) -> None:
    from modelstore import branches

    r = Repository.init(tmp_path / "w")
    c1, c2 = _two_commits(r)
    (outside / "inner" / "x").write_bytes(b"also precious\n")
    keep = _contents(outside)
    for remove in (
        lambda: r.checkout(c2.hex(), force=True),  # tracked sub/... are not in c2: removed
        lambda: branches.reset(r, c2.hex(), mode="hard"),
        lambda: r.rm([str(r.workdir / "sub" / "file"), str(r.workdir / "sub" / "inner")]),
    ):
        r.checkout(c1.hex(), force=True)
        assert (r.workdir / "sub" / "file").read_bytes() == b"tracked\n"
        shutil.rmtree(r.workdir / "sub")
        os.symlink(outside, r.workdir / "sub")  # the user swapped the folder for a symlink
        remove()
        assert _contents(outside) == keep
        os.unlink(r.workdir / "sub")
    (outside / "inner" / "x").unlink()  # an empty folder outside is not pruned either
    r.checkout(c1.hex(), force=True)
    shutil.rmtree(r.workdir / "sub")
    os.symlink(outside, r.workdir / "sub")
    r.checkout(c2.hex(), force=True)
    assert (outside / "inner").is_dir()
    r.close()


def test_a_symlinked_file_is_replaced_not_written_through(tmp_path: Path, outside: Path) -> None:
    r = Repository.init(tmp_path / "w")
    c1, _ = _two_commits(r)
    (r.workdir / "top.txt").unlink()
    os.symlink(outside / "file", r.workdir / "top.txt")
    r.checkout(c1.hex(), force=True)
    assert not (r.workdir / "top.txt").is_symlink()
    assert (r.workdir / "top.txt").read_bytes() == b"top\n"
    assert (outside / "file").read_bytes() == b"precious\n"
    r.close()


# -- absurd sizes and counts, nesting bombs, truncation ----------------------------------------


def _manifest(size: int, ids: bytes, lens: bytes, segs: list[Any]) -> list[Any]:
    return [1, size, blake3(b"").digest(), ids, lens, segs]


ONE = (4).to_bytes(4, "little")


def absurd_manifests() -> dict[str, tuple[list[Any], str]]:
    cid = b"\x01" * 32
    return {
        "too-many-inline-chunks": (
            _manifest(4 * (SEGMENT_CHUNKS + 1), cid * (SEGMENT_CHUNKS + 1),
                      ONE * (SEGMENT_CHUNKS + 1), []), "too many chunks"),
        "zero-length-chunk": (_manifest(0, cid, bytes(4), []), "zero-length"),
        "size-disagrees": (_manifest(2**63, cid, ONE, []), "add up"),
        "ids-and-lengths-disagree": (_manifest(4, cid + cid, ONE, []), "disagree"),
        "inline-and-segments": (_manifest(8, cid, ONE, [[cid, 4, 1]]), "not both"),
        "too-many-segments": (
            _manifest(MAX_SEGMENTS + 1, b"", b"", [[cid, 1, 1]] * (MAX_SEGMENTS + 1)),
            "segments"),
        "segment-count-too-big": (_manifest(4, b"", b"", [[cid, 4, SEGMENT_CHUNKS + 1]]),
                                  "segment chunk count"),
    }


@pytest.mark.parametrize("case", sorted(absurd_manifests()))
def test_absurd_manifests_are_refused(base: tuple[Repository, bytes, Path], case: str) -> None:
    r, _, tmp = base
    value, why = absurd_manifests()[case]
    m = craft("manifest", value)
    tree = tree_of(["f", FILE, 0o644, 4, m[0]])
    store(r, m, tree, commit_of(tree[0]), branch="absurd")
    with pytest.raises(FormatError, match=why):
        api.cat(r, "absurd:f", open(os.devnull, "wb"))
    with pytest.raises(FormatError, match=why):
        r.checkout("absurd", to=tmp / "sentinel" / "out")
    assert not (tmp / "sentinel" / "out" / "f").exists()
    assert not verify(r).ok


def test_a_segment_that_lies_about_its_chunk_list(base: tuple[Repository, bytes, Path]) -> None:
    r, _, _ = base
    cid = blake3(b"abcd").digest()
    cl = craft("chunklist", [1, cid, ONE])
    for seg in ([cl[0], 2**64 - 1, 1], [cl[0], 2**60, 1], [cl[0], 4, 2]):
        m = craft("manifest", _manifest(seg[1], b"", b"", [seg]))
        tree = tree_of(["f", FILE, 0o644, seg[1], m[0]])
        c = commit_of(tree[0], f"lie {seg[1:]}")
        store(r, cl, m, tree, c)
        with pytest.raises(FormatError, match="disagrees with its manifest"):
            r.cat(c[0].hex(), "f", open(os.devnull, "wb"))


def _damage_locations(r: Repository, fn: Callable[[Any], bytes]) -> None:
    def put(txn: Any) -> None:
        for k, v in txn.items("chunks"):
            txn.put("chunks", k, fn(decode_loc(v)))

    r.db.write(put)


@pytest.mark.parametrize(
    "field", ["stored_len", "offset", "offset-2^63", "offset-2^64", "raw_len", "codec", "version"]
)
def test_absurd_chunk_locations_allocate_nothing(tmp_path: Path, field: str) -> None:
    """A crafted chunk index entry: one clear line, exit 13 or 12, even with 1 GiB of memory."""
    r = Repository.init(tmp_path / "w")
    (r.workdir / "m.bin").write_bytes(make_data(1000, 1))
    r.add([str(r.workdir / "m.bin")])
    c = r.commit("v1")

    def bad(loc: Any) -> bytes:
        off, stored, raw, codec_ = loc.offset, loc.stored_len, loc.raw_len, loc.codec
        if field == "stored_len":
            stored = 2**32 - 1
        elif field == "offset":
            off = 2**40
        elif field == "offset-2^63":
            off = 2**63 - 1
        elif field == "offset-2^64":
            off = 2**64 - 1
        elif field == "raw_len":
            raw = 2**32 - 1
        elif field == "codec":
            codec_ = 1
        head = 2 if field == "version" else 1
        return CHUNK_LOC.pack(head, loc.pack_id, off, stored, raw, codec_)

    _damage_locations(r, bad)
    r.close()
    limit = ("import resource, sys; resource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30));"
             "from modelstore.cli.main import main; main()")
    proc = subprocess.run([sys.executable, "-c", limit, "-C", str(tmp_path / "w"), "cat",
                           "HEAD:m.bin"], capture_output=True, text=True, timeout=60)
    assert proc.returncode in (12, 13), proc.stderr
    line = one_line(proc, proc.returncode)
    assert f"m.bin in commit {c.hex()[:12]}" in line, line
    with Repository.open(tmp_path / "w") as r:
        assert not verify(r, read_data=True).ok


def test_a_pack_declaring_absurd_counts_is_reported(tmp_path: Path) -> None:
    r = Repository.init(tmp_path / "w")
    (r.workdir / "m.bin").write_bytes(make_data(1000, 1))
    r.add([str(r.workdir / "m.bin")])
    r.commit("v1")
    (pack,) = (r.ms_dir / "packs").rglob("*.pack")
    raw = bytearray(pack.read_bytes())
    for index_offset, count in ((0, 2**32 - 1), (2**64 - 1, 1), (16, (1 << 24) + 1)):
        fields = list(FOOTER.unpack_from(raw, len(raw) - FOOTER.size))
        fields[0], fields[1] = index_offset, count
        pack.write_bytes(bytes(raw[: -FOOTER.size]) + FOOTER.pack(*fields))
        problems = verify(r).problems
        assert any(p.kind == "pack" and p.where == str(pack) for p in problems), problems
    r.close()


def _nested(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


BOMBS = {
    # a commit whose extra nests one level past MAX_DEPTH, and far past the C unpacker's stack
    "nest-33": b"\x98\x01\xc4\x20" + b"\x11" * 32 + b"\x90\xa1a\x00\x00\xa1m\x81\xa1x"
    + _nested(33),
    "nest-100000": b"\x98\x01\xc4\x20" + b"\x11" * 32 + b"\x90\xa1a\x00\x00\xa1m\x81\xa1x"
    + _nested(100_000),
    "array-2^32": b"\xdd\xff\xff\xff\xff",
    "map-2^32": b"\xdf\xff\xff\xff\xff",
    "bin-2^32": b"\x98\x01\xc6\xff\xff\xff\xff",
    "str-2^32": b"\x98\x01\xc4\x20" + b"\x11" * 32 + b"\x90\xdb\xff\xff\xff\xff",
    "truncated": b"\x98\x01\xc4\x20" + b"\x11" * 20,
    "trailing": b"\x98\x01\xc4\x20" + b"\x11" * 32 + b"\x90\xa1a\x00\x00\xa1m\x80\x00",
    "ext": b"\x98\x01\xd4\x01\x00",
    "empty": b"",
}


@pytest.mark.parametrize("case", sorted(BOMBS))
def test_msgpack_bombs_and_truncation_are_format_errors(
    base: tuple[Repository, bytes, Path], case: str
) -> None:
    r, _, _ = base
    c = craft("commit", body=BOMBS[case])
    store(r, c, branch="bomb")
    with pytest.raises(FormatError):
        r.get_commit(c[0])
    with pytest.raises(FormatError):
        list(r.log("bomb"))
    with pytest.raises(FormatError):
        r.checkout("bomb")
    assert any(p.kind == "bad-object" for p in verify(r).problems)


# -- a malicious directory remote ------------------------------------------------------------


def _bundle(be: LocalBackend, objs: list[tuple[bytes, bytes]], *, raw: bytes | None = None,
            name: str | None = None) -> None:
    frame = raw if raw is not None else zstandard.ZstdCompressor().compress(
        codec.encode([1, [[oid, stored] for oid, stored in objs]]))
    be.put(f"meta/{name or object_id('pack', frame).hex()}.bundle", frame)


def _ref(be: LocalBackend, name: str, value: bytes) -> None:
    be.put("refs/" + name.encode().hex(), value, overwrite=True)


def _zstd_declaring(size: int) -> bytes:
    """A zstd frame that declares ``size`` bytes of content and holds 3."""
    return (b"\x28\xb5\x2f\xfd\xe0" + size.to_bytes(8, "little")
            + (1 | (3 << 3)).to_bytes(3, "little") + b"abc")


def remote_cases(mid: bytes, mstored: bytes) -> dict[str, tuple[Callable[[LocalBackend], None],
                                                                 type[MsError], str]]:
    """Each: how to spoil a healthy remote, the error a fetch must give, and a word of it."""

    def tree_commit(*entries: list[Any]) -> list[tuple[bytes, bytes]]:
        t = tree_of(*entries)
        return [(mid, mstored), t, commit_of(t[0])]

    def with_tree(*entries: list[Any]) -> Callable[[LocalBackend], None]:
        def spoil(be: LocalBackend) -> None:
            objs = tree_commit(*entries)
            _bundle(be, objs)
            _ref(be, "refs/heads/main", objs[-1][0].hex().encode() + b"\n")
        return spoil

    def bundle_raw(frame: bytes, name: str | None = None) -> Callable[[LocalBackend], None]:
        return lambda be: _bundle(be, [], raw=frame, name=name)

    good = tree_commit(["ok", FILE, 0o644, 5, mid])
    cases: dict[str, tuple[Callable[[LocalBackend], None], type[MsError], str]] = {}
    for key, name in BAD_NAMES.items():
        cases[f"tree-{key}"] = (with_tree([name, FILE, 0o644, 5, mid]), FormatError, "component")
    cases["tree-duplicate"] = (with_tree(["a", FILE, 0o644, 5, mid], ["a", FILE, 0o644, 5, mid]),
                               FormatError, "duplicated")
    cases["bundle-not-zstd"] = (bundle_raw(b"hello"), CorruptObjectError, "decompress")
    cases["bundle-declares-2^40"] = (bundle_raw(_zstd_declaring(2**40)), CorruptObjectError,
                                     "decompress")
    cases["bundle-declares-2^31"] = (bundle_raw(_zstd_declaring(2**31 - 1)), MsError, "bundle")
    cases["bundle-nested"] = (bundle_raw(zstandard.ZstdCompressor().compress(_nested(100_000))),
                              FormatError, "msgpack")
    cases["bundle-array-2^32"] = (bundle_raw(zstandard.ZstdCompressor().compress(
        b"\x92\x01\xdd\xff\xff\xff\xff")), FormatError, "max_array_len")
    cases["bundle-truncated"] = (bundle_raw(zstandard.ZstdCompressor().compress(
        codec.encode([1, [[g[0], g[1]] for g in good]]))[:-9]), MsError, "bundle")
    cases["bundle-misnamed"] = (bundle_raw(zstandard.ZstdCompressor().compress(
        codec.encode([1, []])), name="ab" * 32), CorruptObjectError, "does not match its name")
    cases["bundle-object-not-its-id"] = (
        lambda be: _bundle(be, [(b"\x22" * 32, mstored)]), CorruptObjectError, "its id")
    cases["bundle-bad-entry"] = (bundle_raw(zstandard.ZstdCompressor().compress(
        codec.encode([1, [[b"short", b"x"]]]))), FormatError, "malformed entry")

    def ref_to(value: bytes, name: str = "refs/heads/main") -> Callable[[LocalBackend], None]:
        def spoil(be: LocalBackend) -> None:
            _bundle(be, good)
            _ref(be, name, value)
        return spoil

    cases["ref-garbage"] = (ref_to(b"zz\n"), FormatError, "malformed")
    cases["ref-short"] = (ref_to(b"abcd\n"), FormatError, "malformed")
    cases["ref-invalid-name"] = (ref_to(good[-1][0].hex().encode(), "refs/heads/a..b"),
                                 FormatError, "invalid name")
    cases["ref-to-a-tree"] = (ref_to(good[1][0].hex().encode()), FormatError, "not a commit")
    cases["ref-to-nothing"] = (ref_to(b"33" * 32), ObjectNotFoundError, "does not have")
    cases["format"] = (lambda be: be.put("format", b"modelstore remote format 2\n",
                                         overwrite=True), FormatError, "unknown format")
    cases["idx-not-its-name"] = (lambda be: be.put(f"packs/ab/{'ab' * 32}.idx", b"\0" * 49),
                                 CorruptObjectError, "does not match its name")
    return cases


@pytest.fixture(scope="module")
def pair_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made once: a healthy remote (one pushed commit) and a clone of it, both closed."""
    base = tmp_path_factory.mktemp("pair")
    src = Repository.init(base / "src")
    (src.workdir / "m.bin").write_bytes(make_data(50_000, 5))
    src.add([str(src.workdir / "m.bin")])
    src.commit("good")
    src.set_remote("origin", str(base / "remote"))
    api.push(src)
    src.close()
    api.clone(str(base / "remote"), str(base / "dst")).close()
    return base


@pytest.fixture
def remote_pair(pair_template: Path, tmp_path: Path) -> Iterator[tuple[Repository, Path]]:
    """A copy of the template: the remote, and a repository that already fetched it."""
    shutil.copytree(pair_template / "remote", tmp_path / "remote")
    shutil.copytree(pair_template / "dst", tmp_path / "dst")
    dst = Repository.open(tmp_path / "dst")
    dst.set_remote("origin", str(tmp_path / "remote"))
    (tmp_path / "sentinel").mkdir()
    yield dst, tmp_path
    dst.close()


def _case_names() -> list[str]:
    return [*sorted(remote_cases(b"\0" * 32, b"\x01")), "junk-keys-are-ignored"]


@pytest.mark.parametrize("case", _case_names())
def test_a_malicious_remote_is_refused(remote_pair: tuple[Repository, Path], case: str) -> None:
    dst, tmp = remote_pair
    be = LocalBackend(tmp / "remote")
    empty = encode_object_manifest()
    if case == "junk-keys-are-ignored":
        be.put("packs/zz/not-hex.idx", b"x")
        be.put("meta/junk.bundle", b"x")
        be.put("refs/not-hex", b"x")
        api.fetch(dst)
        assert api.clone(str(tmp / "remote"), str(tmp / "c")).resolve("main") == dst.resolve(
            "main")
        return
    spoil, err, word = remote_cases(*empty)[case]
    spoil(be)
    before_refs = _refs(dst)
    before = snapshot(tmp, tmp / "remote")
    with pytest.raises(err, match=word) as info:
        api.fetch(dst)
    assert isinstance(info.value, MsError)
    assert _refs(dst) == before_refs and verify(dst, read_data=True).ok
    with pytest.raises(err, match=word):
        api.clone(str(tmp / "remote"), str(tmp / "sentinel" / "c"))
    # nothing new anywhere: a failed clone removes the repository it started
    assert snapshot(tmp, tmp / "remote") == before


def encode_object_manifest() -> tuple[bytes, bytes]:
    from modelstore.objects import FileManifest

    return encode_object(FileManifest(5, blake3(b"evil\n").digest(),
                                      blake3(b"evil\n").digest(), (5).to_bytes(4, "little")))


def _refs(r: Repository) -> list[tuple[str, Any, Any]]:
    with r.db.read() as txn:
        return refs.list_refs(txn)


def test_cli_clone_of_a_malicious_remote_is_one_line(remote_pair: tuple[Repository, Path]) -> None:
    _, tmp = remote_pair
    spoil, _, _ = remote_cases(*encode_object_manifest())["tree-traversal"]
    spoil(LocalBackend(tmp / "remote"))
    line = one_line(ms("clone", str(tmp / "remote"), str(tmp / "sentinel" / "c")), 12)
    assert "bad path component '../../escape'" in line and "remote bundle meta/" in line
    assert not (tmp / "escape").exists() and not (tmp / "sentinel" / "escape").exists()


# -- ms serve ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.contract.conftest import start_serve

    s = start_serve(tmp_path_factory.mktemp("hostile-serve"), None)
    try:
        yield s
    finally:
        s.stop()


def _raw_request(url: str, method: str, path: str, body: bytes = b"") -> int:
    """Send a request with the path exactly as given (no client-side normalisation)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_serve_refuses_crafted_uploads(server: Any, tmp_path: Path) -> None:
    from modelstore.backend.http import HttpBackend

    repo = f"hostile-{os.getpid()}"
    be = HttpBackend(f"{server.url}/{repo}")
    mid, mstored = encode_object_manifest()
    evil_tree = tree_of(["..", FILE, 0o644, 5, mid])
    evil = [(mid, mstored), evil_tree, commit_of(evil_tree[0])]
    frame = zstandard.ZstdCompressor().compress(codec.encode([1, [list(o) for o in evil]]))
    name = object_id("pack", frame).hex()
    ok_frame = zstandard.ZstdCompressor().compress(codec.encode([1, [[mid, mstored]]]))
    attempts: list[tuple[str, bytes, type[MsError], str]] = [
        (f"meta/{name}.bundle", frame, FormatError, "path component"),
        (f"meta/{'ab' * 32}.bundle", ok_frame, CorruptObjectError, "does not match its name"),
        ("meta/evil.bundle", ok_frame, BadArgumentError, "invalid bundle name"),
        (f"meta/{object_id('pack', b'junk').hex()}.bundle", b"junk", CorruptObjectError,
         "decompress"),
        ("refs/" + b"refs/heads/main".hex(), b"not an id\n", FormatError, "64 hex digits"),
        ("refs/" + b"refs/heads/a..b".hex(), b"ab" * 32 + b"\n", FormatError, "ref name"),
        ("refs/" + b"HEAD/x".hex(), b"ab" * 32 + b"\n", FormatError, "ref name"),
        (f"packs/ab/{'ab' * 32}.pack", b"MSPACK" + bytes(200), FormatError, "pack"),
        (f"packs/ab/{'ab' * 32}.idx", b"\0" * 49, CorruptObjectError, "hashes to"),
    ]
    for key, body, err, word in attempts:
        with pytest.raises(err, match=word):
            be.put(key, body)
        assert be.stat(key) is None, key  # nothing became visible
    # a well-formed bundle and ref are accepted
    be.put(f"meta/{object_id('pack', ok_frame).hex()}.bundle", ok_frame)
    be.put("refs/" + b"refs/heads/main".hex(), b"ab" * 32 + b"\n")
    # keys that try to leave the repository's directory never reach the disk
    sentinel = server.root.parent / "escape"
    for path in (f"/{repo}/o/../../escape", f"/{repo}/o/%2e%2e/%2e%2e/escape",
                 f"/{repo}/o/..%2f..%2fescape", f"/{repo}/o/.ms/escape", f"/{repo}/o//escape",
                 f"/{repo}/o/%00escape", f"/{repo}/o/a\\..\\..\\escape", "/../escape/o/x",
                 "/%2e%2e/o/escape"):
        status = _raw_request(server.url, "PUT", path, b"x")
        assert 400 <= status < 500, (path, status)
    assert not sentinel.exists() and not (server.root / "escape").exists()
    assert not list(server.root.rglob("escape"))


def test_clone_from_a_malicious_server_is_refused(server: Any, tmp_path: Path) -> None:
    # the server's own files were tampered with behind its back: clients still check everything
    repo = f"tampered-{os.getpid()}"
    be = LocalBackend(server.root / repo)
    be.put("format", REMOTE_FORMAT)
    spoil, err, word = remote_cases(*encode_object_manifest())["tree-absolute"]
    spoil(be)
    (tmp_path / "sentinel").mkdir()
    before = snapshot(tmp_path, tmp_path / "c")
    with pytest.raises(err, match=word):
        api.clone(f"{server.url}/{repo}", str(tmp_path / "c"))
    assert snapshot(tmp_path, tmp_path / "c") == before and not (tmp_path / "c").exists()
    assert not Path("/tmp/escape").exists()
    proc = ms("clone", f"{server.url}/{repo}", str(tmp_path / "c2"))
    assert "path component" in one_line(proc, 12)
