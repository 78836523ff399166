"""The ``backend`` fixture: every Backend implementation, one contract suite.

S3 runs against a real moto server in its own process (started once per session, on first use,
and stopped at the end), with a fresh bucket per test and dummy credentials. If the server
cannot start, the S3 tests fail: they never skip.
"""

from __future__ import annotations

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

KINDS = ["memory", "local", "s3"]
MOTO_START_TIMEOUT = 30.0


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
    from modelstore.backend.s3 import S3Backend

    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Backend(bucket, "repo", endpoint_url=endpoint)
