"""Integration fixtures: one small local Ray per test module, a loopback S3 server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A local Ray shared by the module: 4 logical CPUs on 2 cores, no dashboard."""
    import ray

    if ray.is_initialized():  # a job under test may have started its own local Ray
        ray.shutdown()
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=256 << 20,
             logging_level="ERROR", configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_s3(enforce_auth: bool = False) -> Iterator[str]:
    """Run moto's S3 server on 127.0.0.1 in a subprocess; yield its endpoint URL."""
    port = free_port()
    env = dict(os.environ)
    if enforce_auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto S3 server did not start")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A loopback S3 endpoint exported as AWS_ENDPOINT_URL for the module (before Ray)."""
    with moto_s3() as endpoint:
        old = os.environ.get("AWS_ENDPOINT_URL")
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        try:
            yield endpoint
        finally:
            if old is None:
                os.environ.pop("AWS_ENDPOINT_URL", None)
            else:
                os.environ["AWS_ENDPOINT_URL"] = old
