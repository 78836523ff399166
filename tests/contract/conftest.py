"""The ``backend`` fixture: every Backend implementation, one contract suite.

S3 runs against a real moto server in its own process (started once per session, on first use,
and stopped at the end), with a fresh bucket per test and dummy credentials. If the server
cannot start, the S3 tests fail: they never skip.

``serve`` runs ``python -m modelstore.serve`` (uvicorn) in its own process the same way, with a
tokens file, and each test gets a fresh repository name on it, through ``HttpBackend``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelstore.backend import Backend, LocalBackend, MemoryBackend

KINDS = ["memory", "local", "s3", "serve"]
MOTO_START_TIMEOUT = 30.0
SERVE_START_TIMEOUT = 30.0

#: the session server's tokens: write everywhere, read everywhere, write to one repository only
WRITE_TOKEN = "w-" + "0123456789abcdef" * 2
READ_TOKEN = "r-" + "fedcba9876543210" * 2
LIMITED_TOKEN = "l-" + "0f1e2d3c4b5a6978" * 2
LIMITED_REPO = "only-this"
TOKENS = {
    WRITE_TOKEN: {"user": "writer", "scope": "write", "repos": ["*"]},
    READ_TOKEN: {"user": "reader", "scope": "read", "repos": ["*"]},
    LIMITED_TOKEN: {"user": "limited", "scope": "write", "repos": [LIMITED_REPO]},
}


@dataclass
class MotoServer:
    endpoint: str | None
    error: str | None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, with an error: good enough
    except OSError:
        return False


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto S3 server on a free local port, for the whole session."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        except OSError as exc:
            yield MotoServer(None, f"cannot start {' '.join(cmd)}: {exc}")
            return
    try:
        deadline = time.monotonic() + MOTO_START_TIMEOUT
        error: str | None = None
        while not _answers(endpoint):
            if proc.poll() is not None:
                error = f"exited with code {proc.returncode}"
                break
            if time.monotonic() > deadline:
                error = f"did not answer within {MOTO_START_TIMEOUT:.0f}s"
                break
            time.sleep(0.05)
        if error is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            yield MotoServer(None, f"moto server ({' '.join(cmd)}) {error}; log:\n{tail}")
        else:
            yield MotoServer(endpoint, None)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class ServeProcess:
    """A running ``python -m modelstore.serve``: its URL, process and root directory."""

    url: str
    proc: subprocess.Popen[bytes]
    root: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_serve(base: Path, tokens: dict[str, Any] | None) -> ServeProcess:
    """Start ``python -m modelstore.serve`` on a free port under ``base``; wait until it answers.

    ``tokens=None`` starts it with ``--no-auth``. Fails the test if it cannot start.
    """
    root = base / "root"
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "modelstore.serve", str(root), "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "warning"]
    if tokens is None:
        cmd.append("--no-auth")
    else:
        tokens_file = base / "tokens.json"
        tokens_file.write_text(json.dumps(tokens))
        cmd += ["--tokens", str(tokens_file)]
    log_path = base / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    server = ServeProcess(url, proc, root, log_path)
    deadline = time.monotonic() + SERVE_START_TIMEOUT
    error: str | None = None
    while not _answers(url):
        if proc.poll() is not None:
            error = f"exited with code {proc.returncode}"
            break
        if time.monotonic() > deadline:
            error = f"did not answer within {SERVE_START_TIMEOUT:.0f}s"
            break
        time.sleep(0.05)
    if error is not None:
        server.stop()
        tail = log_path.read_text(errors="replace")[-2000:]
        pytest.fail(f"ms serve ({' '.join(cmd)}) {error}; log:\n{tail}")
    return server


@pytest.fixture(scope="session")
def serve_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One ``ms serve`` process for the whole session, with the ``TOKENS`` above."""
    server = start_serve(tmp_path_factory.mktemp("serve"), TOKENS)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def serve_repo_url(serve_server: ServeProcess) -> str:
    """The URL of a fresh (not yet existing) repository on the session server."""
    return f"{serve_server.url}/t-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def s3_endpoint(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The moto endpoint, with dummy AWS credentials in the environment."""
    if moto_server.endpoint is None:
        pytest.fail(f"S3 tests need a moto server (pip install 'moto[server]'): "
                    f"{moto_server.error}")
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return moto_server.endpoint


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    """A plain boto3 client on the moto server (for setup and for looking behind the back)."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """A fresh, empty bucket."""
    name = f"ms-test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh, empty store of each kind."""
    if kind == "memory":
        return MemoryBackend("contract")
    if kind == "local":
        return LocalBackend(tmp_path / "store")
    if kind == "serve":
        from modelstore.backend.http import HttpBackend

        return HttpBackend(request.getfixturevalue("serve_repo_url"), token=WRITE_TOKEN)
    from modelstore.backend.s3 import S3Backend

    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Backend(bucket, "repo", endpoint_url=endpoint)
