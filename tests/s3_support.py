"""A real S3-compatible endpoint for tests: moto's standalone server in its own process on loopback."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from tests.conftest import _free_port

BUCKET = "tuneloom-test"


@contextlib.contextmanager
def moto_s3(*, check_credentials: bool = False) -> Iterator[str]:
    """Yield `s3://BUCKET/shared` on a fresh moto server; the AWS variables point at it meanwhile.

    Processes started inside the block inherit the variables, so a `tuneloom serve` or `tuneloom
    worker` reaches the same server through s3fs. With `check_credentials` the server refuses every
    request, as S3 does keys it does not know (moto's IAM checks on; the test keys are no user's),
    and so no bucket is made.
    """
    port = _free_port()
    auth = {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if check_credentials else {}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **auth},
    )
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }.items():
            env.setenv(name, value)
        try:
            _wait_for(endpoint, proc)
            if not check_credentials:
                httpx.put(f"{endpoint}/{BUCKET}").raise_for_status()
            yield f"s3://{BUCKET}/shared"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _wait_for(endpoint: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "moto server exited"
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(endpoint, timeout=1)
            return
        time.sleep(0.1)
    pytest.fail("moto server did not start")
