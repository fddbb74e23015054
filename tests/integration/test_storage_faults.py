"""Snapshots against a real S3 endpoint that fails: down for a while (retried, then
committed), down for good (a clear error, nothing marked committed), permission denied.

The S3 server (moto, loopback) sits behind a small TCP proxy the test can take down:
while down, new connections are closed at once and open ones are cut."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from diet_ray.data.errors import DataError
from diet_ray.data.fs import open_fs
from diet_ray.memory.store import SnapshotStore
from tests.integration.conftest import moto_s3

ARRAYS = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}


class Proxy:
    """A loopback TCP proxy to `port` that can be taken down and brought back."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = True
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self) -> None:
        self.up = False
        with self.lock:
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.open.clear()

    def close(self) -> None:
        self.down()
        self.server.close()


@pytest.fixture
def proxied_s3(monkeypatch) -> Iterator[tuple[Proxy, str]]:
    """(proxy, bucket URI) with AWS_ENDPOINT_URL pointing at the proxy."""
    with moto_s3() as endpoint:
        proxy = Proxy(int(endpoint.rsplit(":", 1)[1]))
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
        # botocore's own retries (5 attempts by default, under s3fs's 5) would stretch the
        # outage test to minutes; the store's retry loop is what is under test
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        fs, _ = open_fs("s3://faults")
        fs.mkdir("faults")
        try:
            yield proxy, "s3://faults/run"
        finally:
            proxy.close()


def test_endpoint_down_for_a_while_is_retried_and_the_commit_lands(proxied_s3):
    proxy, uri = proxied_s3
    store = SnapshotStore(uri, tries=6, backoff_s=0.2)
    store.commit(0, 1, ARRAYS, {"rows": 2}, "cfg")
    proxy.down()
    threading.Timer(1.0, lambda: setattr(proxy, "up", True)).start()
    started = time.monotonic()
    store.commit(1, 2, ARRAYS, {"rows": 4}, "cfg")
    assert time.monotonic() - started >= 0.9  # it did wait for the endpoint
    fresh = SnapshotStore(uri)
    assert fresh.stages() == [0, 1]
    arrays, manifest = fresh.load(1)
    assert manifest.version == 2 and np.array_equal(arrays["x"], ARRAYS["x"])


def test_endpoint_down_for_good_is_a_clear_error_and_nothing_is_marked_committed(proxied_s3):
    proxy, uri = proxied_s3
    store = SnapshotStore(uri, tries=3, backoff_s=0.1)
    store.commit(0, 1, ARRAYS, {"rows": 2}, "cfg")
    proxy.down()
    with pytest.raises(DataError, match=r"s3://faults/run.*(tries|storage)"):
        store.commit(1, 2, ARRAYS, {"rows": 4}, "cfg")
    proxy.up = True
    fresh = SnapshotStore(uri)
    assert fresh.stages() == [0]  # stage 1 has no manifest: not committed
    assert fresh.latest().stage == 0 and fresh.latest().version == 1


def test_permission_denied_is_a_clear_error_and_nothing_is_written(monkeypatch):
    with moto_s3(enforce_auth=True) as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        started = time.monotonic()
        with pytest.raises(DataError, match="s3://locked"):
            SnapshotStore("s3://locked/run").commit(0, 1, ARRAYS, {"rows": 2}, "cfg")
        assert time.monotonic() - started < 30  # no long retry loop on a permanent error


def test_missing_credentials_are_a_clear_error(monkeypatch, tmp_path):
    from diet_ray.data.schema import Schema

    with moto_s3() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                    "AWS_PROFILE"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        with pytest.raises(DataError, match=r"s3://nocreds/data.*(credentials|access denied)"):
            Schema.load("s3://nocreds/data")
        with pytest.raises(DataError, match="credentials"):
            SnapshotStore("s3://nocreds/run").latest()
