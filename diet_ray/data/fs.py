"""fsspec filesystems for any URI (local path, s3://, gs://, memory://) and their pyarrow twin.

Credentials and endpoints come from the standard chains (for S3: the AWS environment,
profile or instance role; `AWS_ENDPOINT_URL` for a non-AWS endpoint). Nothing here
hard-codes a bucket, key or endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import fsspec
import pyarrow.fs as pafs
from fsspec.core import url_to_fs

from diet_ray.data.errors import DataError

try:  # s3fs raises botocore's network errors as they are (not OSError subclasses)
    from botocore.exceptions import ConnectionError as _BotoConnectionError
    from botocore.exceptions import HTTPClientError as _BotoHTTPClientError
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    _BOTO_NETWORK: tuple[type[Exception], ...] = (_BotoConnectionError, _BotoHTTPClientError)
    _BOTO_CREDENTIALS: tuple[type[Exception], ...] = (NoCredentialsError, PartialCredentialsError)
except ImportError:  # pragma: no cover - botocore comes with s3fs
    _BOTO_NETWORK = _BOTO_CREDENTIALS = ()

# Failures worth retrying: the endpoint or the network, not the request.
NETWORK_ERRORS: tuple[type[Exception], ...] = (ConnectionError, TimeoutError, *_BOTO_NETWORK)


def open_fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return `(filesystem, root path without protocol)` for `uri`, trailing slash removed."""
    if not uri:
        raise DataError("an empty path or URI was given: pass a local path or e.g. s3://bucket/prefix")
    options = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if uri.startswith(("s3://", "s3a://")) and endpoint:
        options["endpoint_url"] = endpoint  # carried with the pickled filesystem to Ray workers
    try:
        fs, root = url_to_fs(uri, **options)
    except (ImportError, ValueError) as e:
        raise DataError(f"{uri}: cannot open this URI ({e})") from e
    return fs, root.rstrip("/") or root


def absolute_uri(uri: str) -> str:
    """A local path made absolute (Ray workers run in other directories); URIs unchanged."""
    if not uri or "://" in uri:
        return uri
    return os.path.abspath(os.path.expanduser(uri))


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def to_pyarrow(fs: fsspec.AbstractFileSystem) -> pafs.FileSystem:
    """The pyarrow filesystem that Ray Data and pyarrow.parquet use to read `fs`'s paths."""
    if is_local(fs):
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write one whole object (a single PUT on object stores); local parents are created."""
    if is_local(fs):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe(path, data)


def move_file(fs: fsspec.AbstractFileSystem, src: str, dst: str) -> None:
    """Move one file (a rename locally, copy + delete on object stores)."""
    if is_local(fs):
        fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
    fs.mv(src, dst)


@contextmanager
def storage_errors(uri: str) -> Iterator[None]:
    """Turn filesystem failures under `uri` into one `DataError` that says what to do."""
    try:
        yield
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(
            f"{uri}: not found ({e}). Check the path; for s3:// check that the bucket exists."
        ) from e
    except (PermissionError, *_BOTO_CREDENTIALS) as e:
        raise DataError(
            f"{uri}: access denied ({e}). Check the credentials (AWS_ACCESS_KEY_ID / "
            "AWS_PROFILE / instance role) and the bucket policy."
        ) from e
    except NETWORK_ERRORS as e:
        raise DataError(f"{uri}: storage unreachable ({e}). Check the endpoint and network.") from e
