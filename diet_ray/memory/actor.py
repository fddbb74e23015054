"""The memory actor: the one authoritative copy of the run's state, committed stage by stage.

It holds the last committed snapshot (`dict[str, np.ndarray]` + meta) and, while a stage
is in progress, an uncommitted working copy. `commit` persists a stage through
`SnapshotStore` *before* changing anything in memory, so a crash mid-commit leaves the old
version authoritative; a restarted actor (Ray restarts it, `max_restarts=-1`) reloads the
latest committed snapshot and the in-progress stage is redone. Commits are exactly-once:
a retried commit of a committed stage returns its version and writes nothing.

Arrays travel through Ray's object store (zero-copy for numpy on the reading side); the
actor copies what it keeps, so its state never depends on a caller that has exited.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import ray
from ray.actor import ActorHandle

from diet_ray.data.errors import DataError
from diet_ray.memory.store import SnapshotStore

log = logging.getLogger("diet_ray")

Arrays = dict[str, np.ndarray]


class MemoryStateError(RuntimeError):
    """A call that does not fit the actor's state (a stage gap, a missing working copy)."""


class MemoryActor:
    """Owns the committed state of a run stored at `store_uri` (run it with Ray)."""

    def __init__(self, store_uri: str, config_hash: str) -> None:
        self._store = SnapshotStore(store_uri)
        self._config_hash = config_hash
        self._store.check_config(config_hash)
        self._stage, self._version = -1, 0
        self._arrays: Arrays = {}
        self._meta: dict[str, Any] = {}
        self._working: tuple[int, int, Arrays, dict[str, Any]] | None = None
        self._token = 0
        latest = self._store.latest()
        if latest is not None:
            arrays, manifest = self._store.load(latest.stage)
            self._arrays = _freeze(arrays)
            self._stage, self._version, self._meta = manifest.stage, manifest.version, manifest.meta
            log.info("memory actor resumed %s at stage %d, version %d",
                     store_uri, self._stage, self._version)

    def info(self) -> dict[str, Any]:
        """Store URI, config hash, last committed stage and version."""
        return {"store_uri": self._store.uri, "config_hash": self._config_hash,
                "last_committed": self._stage, "version": self._version}

    def last_committed(self) -> int:
        """The last committed stage, -1 when nothing is committed."""
        return self._stage

    def version(self) -> int:
        """The committed version (1 for the first commit, 0 when none)."""
        return self._version

    def get(self) -> tuple[int, Arrays, dict[str, Any]]:
        """(version, arrays, meta) of the committed state (empty dicts when none)."""
        return self._version, self._arrays, self._meta

    def stage_working(self, stage: int, arrays: Mapping[str, np.ndarray],
                      meta: Mapping[str, Any]) -> int:
        """Keep an uncommitted working copy for `stage` (the next one); return its token.

        The working copy is lost on restart by design: the stage is redone from the last
        commit.
        """
        self._expect_next(stage)
        self._token += 1
        self._working = (stage, self._token, _own(arrays), dict(meta))
        return self._token

    def get_working(self, stage: int) -> tuple[int, Arrays, dict[str, Any]]:
        """(token, arrays, meta) of the working copy for `stage`."""
        if self._working is None or self._working[0] != stage:
            held = "none" if self._working is None else f"stage {self._working[0]}"
            raise MemoryStateError(
                f"no working copy for stage {stage} (held: {held}); after an actor restart "
                f"redo the stage from the last commit (stage {self._stage})"
            )
        _, token, arrays, meta = self._working
        return token, arrays, meta

    def commit(self, stage: int, arrays: Mapping[str, np.ndarray],
               meta: Mapping[str, Any]) -> int:
        """Persist `stage` as version + 1, then make it the committed state; return the version.

        A stage that is already committed returns its version and writes nothing (a retry).
        """
        if stage <= self._stage:
            version = (self._version if stage == self._stage
                       else self._store.manifest(stage).version)
            log.info("stage %d is already committed as version %d: commit ignored", stage,
                     version)
            return version
        self._expect_next(stage)
        owned = _own(arrays)
        manifest = self._store.commit(stage, self._version + 1, owned, meta, self._config_hash)
        self._stage, self._version = manifest.stage, manifest.version
        self._arrays, self._meta = owned, manifest.meta
        if self._working is not None and self._working[0] <= stage:
            self._working = None
        return self._version

    def _expect_next(self, stage: int) -> None:
        if stage != self._stage + 1:
            raise MemoryStateError(
                f"stage {stage} does not follow the last committed stage {self._stage}: "
                f"work on stage {self._stage + 1} next"
            )


def _own(arrays: Mapping[str, np.ndarray]) -> Arrays:
    """Read-only copies in the actor's memory: object-store views are borrowed from a caller
    that may exit, and nobody may change a committed or staged state in place."""
    owned = {name: np.array(value, copy=True) if isinstance(value, np.ndarray) else value
             for name, value in arrays.items()}
    return _freeze(owned)


def _freeze(arrays: Arrays) -> Arrays:
    for value in arrays.values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    return arrays


RemoteMemoryActor = ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)(MemoryActor)


def start_memory_actor(name: str, store_uri: str, config_hash: str,
                       namespace: str | None = None) -> ActorHandle:
    """Start (or find, by `name`) the memory actor of the run stored at `store_uri`.

    Fails fast with a `DataError` when `store_uri` holds snapshots of another config, or
    when an actor of that name already serves another store or config.
    """
    SnapshotStore(store_uri).check_config(config_hash)
    handle = RemoteMemoryActor.options(
        name=name, namespace=namespace, get_if_exists=True, lifetime=None
    ).remote(store_uri, config_hash)
    info = ray.get(handle.info.remote())
    wanted = SnapshotStore(store_uri).uri
    if (info["store_uri"], info["config_hash"]) != (wanted, config_hash):
        raise DataError(
            f"a memory actor named {name!r} already serves {info['store_uri']} with config "
            f"{info['config_hash'][:12]}: pick another name or the same --out and config"
        )
    return handle
