"""A real S3 API for tests: moto's server on 127.0.0.1, one per test session.

Import the fixtures into a test module (`from moto_fixtures import moto_endpoint, s3_bucket  # noqa: F401`).
pytest makes one fixture definition per importing module, so the server itself is a process-wide singleton
(its thread is a daemon and ends with the process); each module's fixture only sets the fake credentials.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

_lock = threading.Lock()
_endpoint: str | None = None

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _start_server() -> str:
    global _endpoint
    with _lock:
        if _endpoint is None:
            from moto.server import ThreadedMotoServer

            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            _endpoint = f"http://{host}:{port}"
        return _endpoint


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The endpoint URL of the moto S3 server, with fake AWS credentials in the environment."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in FAKE_AWS_ENV.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        yield _start_server()


def s3_client(endpoint: str) -> Any:
    """A plain boto3 client, to check objects independently of axpo_core.storage."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> str:
    """A fresh, empty bucket per test."""
    name = f"axpo-test-{uuid.uuid4().hex[:12]}"
    s3_client(moto_endpoint).create_bucket(Bucket=name)
    return name
