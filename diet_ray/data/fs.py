"""fsspec filesystems for any URI (local path, s3://, gs://, memory://) and their pyarrow twin.

Credentials and endpoints come from the standard chains (for S3: the AWS environment,
profile or instance role; `AWS_ENDPOINT_URL` for a non-AWS endpoint). Nothing here
hard-codes a bucket, key or endpoint.
"""

from __future__ import annotations

import fsspec
import pyarrow.fs as pafs
from fsspec.core import url_to_fs

from diet_ray.data.errors import DataError


def open_fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return `(filesystem, root path without protocol)` for `uri`, trailing slash removed."""
    if not uri:
        raise DataError("an empty path or URI was given: pass a local path or e.g. s3://bucket/prefix")
    try:
        fs, root = url_to_fs(uri)
    except (ImportError, ValueError) as e:
        raise DataError(f"{uri}: cannot open this URI ({e})") from e
    return fs, root.rstrip("/") or root


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
