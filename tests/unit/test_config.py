"""config: the repository config map and the FORMAT file."""

from __future__ import annotations

from typing import Any

import pytest

from modelstore import codec
from modelstore.chunker import ChunkerParams
from modelstore.config import (
    FORMAT_FILE_TEXT,
    FORMAT_VERSION,
    RepoConfig,
    parse_format_file,
)
from modelstore.errors import FormatError, UnsupportedFormatError


def _cfg() -> RepoConfig:
    return RepoConfig(
        repo_id="ab" * 16,
        chunker=ChunkerParams(min_size=256, avg_size=1024, max_size=4096),
        pack_size=16 * 1024,
        compat=["some-new-index"],
        remotes={"origin": {"url": "s3://bucket/x"}},
        user={"name": "me", "n": 3},
    )


def _value(**over: Any) -> dict[str, Any]:
    v = _cfg().to_value()
    v.update(over)
    return v


def _decode(v: Any, **kw: Any) -> RepoConfig:
    return RepoConfig.decode(codec.encode(v), **kw)


def test_config_round_trip():
    c = _cfg()
    back = RepoConfig.decode(c.encode())
    assert back == c
    assert back.encode() == c.encode()
    assert RepoConfig.decode(c.encode(), for_write=True) == c


def test_config_defaults_round_trip():
    c = RepoConfig()
    assert len(c.repo_id) == 32 and c.repo_id != RepoConfig().repo_id
    assert RepoConfig.decode(c.encode()) == c


def test_config_features_sorted_in_encoding():
    a = RepoConfig(repo_id="x", compat=["b", "a"])
    b = RepoConfig(repo_id="x", compat=["a", "b"])
    assert a.encode() == b.encode()


@pytest.mark.parametrize("version", [0, 2, 99])
def test_config_unknown_format_version(version):
    with pytest.raises(UnsupportedFormatError, match=f"format {version}"):
        _decode(_value(format_version=version))


@pytest.mark.parametrize("version", ["1", 1.0, True, None])
def test_config_format_version_must_be_int(version):
    # FORMAT.md §1: a format_version that is not (the int) 1 is unsupported
    with pytest.raises(UnsupportedFormatError):
        _decode(_value(format_version=version))


def test_config_unknown_incompat_feature_refused():
    v = _value(features={"incompat": ["zz-future", "aa-future"], "ro_compat": [], "compat": []})
    with pytest.raises(UnsupportedFormatError, match="aa-future, zz-future"):
        _decode(v)
    with pytest.raises(UnsupportedFormatError):
        _decode(v, for_write=True)


def test_config_unknown_ro_compat_refused_only_for_write():
    v = _value(features={"incompat": [], "ro_compat": ["future-ro"], "compat": []})
    c = _decode(v)
    assert c.ro_compat == ["future-ro"]
    with pytest.raises(UnsupportedFormatError, match="read-only"):
        _decode(v, for_write=True)


def test_config_unknown_compat_ignored():
    v = _value(features={"incompat": [], "ro_compat": [], "compat": ["whatever"]})
    assert _decode(v, for_write=True).compat == ["whatever"]


def test_config_features_optional():
    v = _value()
    del v["features"]
    c = _decode(v, for_write=True)
    assert c.incompat == c.ro_compat == c.compat == []


def test_config_unknown_hash():
    with pytest.raises(UnsupportedFormatError, match="sha256"):
        _decode(_value(hash="sha256"))


@pytest.mark.parametrize(
    "v",
    [
        [],
        "config",
        None,
        {},
        {k: val for k, val in _value().items() if k != "repo_id"},
        {k: val for k, val in _value().items() if k != "chunker"},
        {k: val for k, val in _value().items() if k != "pack_size"},
        _value(features=[]),
        _value(features="incompat"),
        _value(features={"incompat": 5}),
        _value(features={"incompat": [1]}),
        _value(features={"incompat": [["x"]]}),
        _value(features={"ro_compat": [None]}),
        _value(chunker=[]),
        _value(chunker={}),
        _value(chunker={**_cfg().chunker.to_dict(), "min_size": "x"}),
        _value(chunker={**_cfg().chunker.to_dict(), "extra": 1}),
        _value(pack_size=float("inf")),
        _value(pack_size=float("nan")),
        _value(pack_size="12"),
        _value(pack_size=0),
        _value(pack_size=-1),
        _value(pack_size=1.5),
        _value(remotes=[]),
        _value(remotes=[["a", "b"]]),
        _value(user="x"),
    ],
)
def test_config_malformed_is_format_error(v):
    with pytest.raises(FormatError) as ei:
        _decode(v)
    assert "\n" not in str(ei.value)


def test_config_not_msgpack():
    with pytest.raises(FormatError):
        RepoConfig.decode(b"\xc1")


def test_config_format_file_text():
    assert FORMAT_FILE_TEXT == "modelstore repository format 1\n"
    assert parse_format_file(FORMAT_FILE_TEXT) == FORMAT_VERSION == 1
    assert parse_format_file("modelstore repository format 1") == 1
    assert parse_format_file("modelstore repository format 1\r\n") == 1


@pytest.mark.parametrize("version", [0, 2, 10])
def test_config_format_file_unknown_version(version):
    with pytest.raises(UnsupportedFormatError, match=f"format {version}"):
        parse_format_file(f"modelstore repository format {version}\n")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "modelstore repository format\n",
        "modelstore repository format one\n",
        "modelstore repository format 1 2\n",
        "modelstore repository format 1.0\n",
        "Modelstore repository format 1\n",
        "git repository format 1\n",
        "format 1",
    ],
)
def test_config_format_file_damaged(text):
    with pytest.raises(FormatError, match="FORMAT file is damaged"):
        parse_format_file(text)
