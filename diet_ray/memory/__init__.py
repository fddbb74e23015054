"""The memory: its authoritative actor and the versioned snapshots it commits."""

from diet_ray.memory.actor import MemoryActor, MemoryStateError, start_memory_actor
from diet_ray.memory.store import Manifest, SnapshotConflictError, SnapshotStore

__all__ = [
    "Manifest",
    "MemoryActor",
    "MemoryStateError",
    "SnapshotConflictError",
    "SnapshotStore",
    "start_memory_actor",
]
