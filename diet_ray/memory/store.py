"""Versioned, immutable snapshots of a run's state at any fsspec URI (local, s3://, memory://).

A store is a folder holding one sub-folder per committed stage:

    snapshots/stage=0003/tensors.npz     every array of the snapshot, one .npz (no pickle)
    snapshots/stage=0003/manifest.json   written LAST: its presence means "committed"

A snapshot is a flat `dict[str, np.ndarray]` of numeric arrays (keys such as
"memory/ids", "continual/fc.weight", "trajectory/0/fc.weight") plus a JSON-able `meta`
dict. The manifest records version, stage, config hash, creation time, each array's
name / shape / dtype, the .npz's sha256 and byte size, and `meta["rows"]` as the row count.

Rules: a stage folder without a manifest is not committed (ignored, and overwritten by the
next commit of that stage); a committed stage never changes (committing identical content
again is a no-op, different content is an error); transient storage errors are retried
with exponential backoff, then reported as a `DataError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import numpy as np

from diet_ray.data.errors import DataError
from diet_ray.data.fs import (
    NETWORK_ERRORS,
    is_local,
    join,
    move_file,
    open_fs,
    storage_errors,
    write_bytes,
)
from diet_ray.data.schema import stage_dir

log = logging.getLogger("diet_ray")

SNAPSHOTS_DIR = "snapshots"
TENSORS_FILE = "tensors.npz"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
NUMERIC_KINDS = "biufc"  # bool, int, uint, float, complex: all load without pickle
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed entry times make the .npz bytes reproducible
_STAGE_DIR = re.compile(r"stage=(\d+)$")
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
T = TypeVar("T")


class SnapshotConflictError(DataError):
    """A committed stage was committed again with different content."""


@dataclass(frozen=True)
class ArrayInfo:
    """Name, shape and dtype (numpy's `dtype.str`, e.g. "<f4") of one snapshot array."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Manifest:
    """What a committed snapshot holds; `sha256` and `size` are those of its tensors.npz."""

    stage: int
    version: int
    config_hash: str
    created: str
    arrays: tuple[ArrayInfo, ...]
    sha256: str
    size: int
    rows: int | None
    meta: dict[str, Any]
    format: int = MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        if raw.get("format") != MANIFEST_FORMAT:
            raise DataError(
                f"snapshot manifest has format {raw.get('format')!r}, this diet-ray reads "
                f"format {MANIFEST_FORMAT}: use the diet-ray version that wrote it or a new --out"
            )
        arrays = tuple(
            ArrayInfo(a["name"], tuple(a["shape"]), a["dtype"]) for a in raw.pop("arrays")
        )
        return cls(arrays=arrays, **raw)

    def same_content(self, other: Manifest) -> bool:
        """True when both describe the same snapshot (creation time aside)."""
        return (self.sha256, self.version, self.config_hash, self.meta) == (
            other.sha256, other.version, other.config_hash, other.meta
        )


class SnapshotStore:
    """Commit and load immutable stage snapshots under `uri` (see the module docstring).

    `tries` attempts per storage call for transient errors (ConnectionError, TimeoutError,
    other OSErrors), waiting `backoff_s`, then twice as long, and so on, between them.
    """

    def __init__(self, uri: str, tries: int = 5, backoff_s: float = 0.2) -> None:
        if tries < 1:
            raise ValueError(f"tries must be at least 1, got {tries}")
        self.uri = uri.rstrip("/") or uri
        self.tries = tries
        self.backoff_s = backoff_s
        self._fs, self._root = open_fs(uri)
        self._dir = join(self._root, SNAPSHOTS_DIR)

    # -- queries -------------------------------------------------------------------------
    def stages(self) -> list[int]:
        """Committed stages (those with a manifest), ascending."""
        def listing() -> list[str]:
            self._fs.invalidate_cache(self._dir)  # another process may have committed
            try:
                return self._fs.find(self._dir)
            except FileNotFoundError:
                return []

        found = []
        for path in self._call(listing, f"listing {self._display(self._dir)}"):
            folder, _, name = path.rstrip("/").rpartition("/")
            match = _STAGE_DIR.search(folder)
            if name == MANIFEST_FILE and match:
                found.append(int(match.group(1)))
        return sorted(set(found))

    def latest(self) -> Manifest | None:
        """The manifest of the highest committed stage, or None when nothing is committed."""
        stages = self.stages()
        return self.manifest(stages[-1]) if stages else None

    def manifest(self, stage: int) -> Manifest:
        """The manifest of committed `stage`; a `DataError` when it is not committed."""
        found = self._read_manifest(stage)
        if found is None:
            raise DataError(
                f"{self._display(self._stage_path(stage))}: stage {stage} has no committed "
                f"snapshot (committed stages: {self.stages()})"
            )
        return found

    def load(self, stage: int | None = None) -> tuple[dict[str, np.ndarray], Manifest]:
        """Arrays and manifest of `stage` (default: the latest), checksum verified."""
        if stage is None:
            latest = self.latest()
            if latest is None:
                raise DataError(f"{self.uri}: no committed snapshot to load")
            stage = latest.stage
        manifest = self.manifest(stage)
        path = join(self._stage_path(stage), TENSORS_FILE)
        data = self._call(lambda: self._fs.cat_file(path), f"reading {self._display(path)}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest.sha256 or len(data) != manifest.size:
            raise DataError(
                f"{self._display(path)}: checksum mismatch (sha256 {digest[:16]}…, "
                f"{len(data)} bytes; the manifest says {manifest.sha256[:16]}…, "
                f"{manifest.size} bytes). The file is corrupt: restore it or rerun the stage."
            )
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        if _describe(arrays) != manifest.arrays:
            raise DataError(f"{self._display(path)}: arrays differ from those in the manifest")
        return arrays, manifest

    def check_config(self, config_hash: str) -> None:
        """Raise a `DataError` when the latest snapshot was made with another config."""
        latest = self.latest()
        if latest is not None and latest.config_hash != config_hash:
            raise DataError(
                f"{self.uri}: this output was written with a different config (hash "
                f"{latest.config_hash[:12]}, now {config_hash[:12]}); use a new --out or "
                "the same config"
            )

    # -- commit --------------------------------------------------------------------------
    def commit(self, stage: int, version: int, arrays: Mapping[str, np.ndarray],
               meta: Mapping[str, Any], config_hash: str) -> Manifest:
        """Persist one snapshot: tensors.npz (one whole-object write), then manifest.json.

        Committing a committed stage again returns its manifest when the content is the
        same (a retried commit), and raises `SnapshotConflictError` otherwise.
        """
        if stage < 0 or version < 0:
            raise ValueError(f"stage and version must be >= 0, got {stage} and {version}")
        data = npz_bytes(arrays)
        rows = meta.get("rows")
        manifest = Manifest(
            stage=stage, version=version, config_hash=config_hash,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            arrays=_describe(arrays), sha256=hashlib.sha256(data).hexdigest(),
            size=len(data), rows=None if rows is None else int(rows), meta=_json_meta(meta),
        )
        existing = self._read_manifest(stage)
        if existing is not None:
            if existing.same_content(manifest):
                log.info("snapshot %s stage %d already committed: nothing to do", self.uri, stage)
                return existing
            raise SnapshotConflictError(
                f"{self._display(self._stage_path(stage))}: stage {stage} is already committed "
                f"(version {existing.version}) with different content; committed snapshots "
                "never change: commit the next stage or use a new --out"
            )
        self.check_config(config_hash)
        folder = self._stage_path(stage)
        self._put(join(folder, TENSORS_FILE), data)
        self._put(join(folder, MANIFEST_FILE), manifest.to_json().encode(), atomic=True)
        log.info("snapshot %s stage %d committed as version %d (%d bytes)",
                 self.uri, stage, version, len(data))
        return manifest

    # -- storage helpers -----------------------------------------------------------------
    def _stage_path(self, stage: int) -> str:
        return join(self._dir, stage_dir(stage))

    def _display(self, path: str) -> str:
        """`path` as the user wrote the store's URI (with its protocol)."""
        return self.uri + path[len(self._root):] if path.startswith(self._root) else path

    def _read_manifest(self, stage: int) -> Manifest | None:
        path = join(self._stage_path(stage), MANIFEST_FILE)

        def read() -> bytes | None:
            try:
                return self._fs.cat_file(path)
            except FileNotFoundError:
                return None

        text = self._call(read, f"reading {self._display(path)}")
        if text is None:
            return None
        try:
            return Manifest.from_json(text.decode())
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{self._display(path)}: unreadable manifest ({e})") from e

    def _put(self, path: str, data: bytes, atomic: bool = False) -> None:
        """One whole-object write; `atomic` locally means write a temp file, then rename."""
        def put() -> None:
            if atomic and is_local(self._fs):
                write_bytes(self._fs, path + ".tmp", data)
                move_file(self._fs, path + ".tmp", path)
            else:
                write_bytes(self._fs, path, data)

        self._call(put, f"writing {self._display(path)}")

    def _call(self, action: Callable[[], T], what: str) -> T:
        """Run `action`, retrying transient storage errors with exponential backoff."""
        delay = self.backoff_s
        with storage_errors(self.uri):
            for attempt in range(1, self.tries + 1):
                try:
                    return action()
                except _PERMANENT:
                    raise
                except (*NETWORK_ERRORS, OSError) as e:
                    if attempt == self.tries:
                        raise DataError(
                            f"{self.uri}: storage failed after {self.tries} tries while "
                            f"{what} ({type(e).__name__}: {e}). Check the endpoint and "
                            "network, then rerun: the run resumes from the last committed "
                            "snapshot."
                        ) from e
                    log.warning("%s failed (%s: %s), retry %d/%d in %.1f s", what,
                                type(e).__name__, e, attempt, self.tries - 1, delay)
                    time.sleep(delay)
                    delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The .npz (as `np.savez` writes it, entries sorted, fixed times) of numeric `arrays`.

    Equal arrays always give equal bytes, so a retried commit has the same sha256.
    """
    _check_arrays(arrays)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in sorted(arrays):
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            with archive.open(entry, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(arrays[name]), allow_pickle=False)
    return buffer.getvalue()


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> None:
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise DataError(f"snapshot array name {name!r}: use a non-empty string")
        if not isinstance(value, np.ndarray):
            raise DataError(
                f"snapshot array {name!r} is a {type(value).__name__}, not a numpy array: "
                "convert it first (e.g. tensor.detach().cpu().numpy())"
            )
        if value.dtype.kind not in NUMERIC_KINDS:
            raise DataError(
                f"snapshot array {name!r} has dtype {value.dtype}: only numeric arrays "
                "(bool, int, float) can be stored, without pickle"
            )


def _describe(arrays: Mapping[str, np.ndarray]) -> tuple[ArrayInfo, ...]:
    return tuple(
        ArrayInfo(name, tuple(int(d) for d in arrays[name].shape), arrays[name].dtype.str)
        for name in sorted(arrays)
    )


def _json_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """`meta` as it reads back from JSON (tuples become lists), or a clear error."""
    try:
        return json.loads(json.dumps(dict(meta), sort_keys=True))
    except (TypeError, ValueError) as e:
        raise DataError(
            f"snapshot meta is not JSON-able ({e}): use str/int/float/bool/list/dict values "
            "(convert numpy scalars with int() or float())"
        ) from e
