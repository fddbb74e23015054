"""Influence-aware memory addressing: which slots a stage updates, which rows become new
slots, and which slots a full memory evicts.

Each influential row of the stage attends to the slots by key similarity (softmax over
slots of cosine / temperature) and spends its influence weight as attention mass; the slots
holding the most mass are addressed (updated by the bi-level step), all others stay frozen,
which is how old knowledge survives. New slots come from influential rows that no existing
slot covers (cosine similarity to the nearest slot key below `cover`).
"""

from __future__ import annotations

import numpy as np

BLOCK_ELEMENTS = 1 << 22  # rows × slots per block of similarities (16 MiB of float32)


def block_rows(slots: int) -> int:
    """Rows per block so that a [block, slots] similarity matrix fits BLOCK_ELEMENTS."""
    return max(1, BLOCK_ELEMENTS // max(slots, 1))


def attention_mass(slot_keys: np.ndarray, row_keys: np.ndarray, row_weight: np.ndarray,
                   temperature: float) -> np.ndarray:
    """Attention mass per slot [N]: sum over rows of row_weight[m] * softmax_n(sim[m, n] / T).

    slot_keys [N, H], row_keys [M, H] unit norm; row_weight [M] >= 0. Computed in row
    blocks: memory O(N × block), never O(M × N).
    """
    mass = np.zeros(len(slot_keys), np.float64)
    if len(slot_keys) == 0:
        return mass
    step = block_rows(len(slot_keys))
    for start in range(0, len(row_keys), step):
        logits = (row_keys[start:start + step] @ slot_keys.T) / temperature  # [b, N]
        logits -= logits.max(axis=1, keepdims=True)
        att = np.exp(logits)
        att /= att.sum(axis=1, keepdims=True)
        mass += row_weight[start:start + step] @ att
    return mass


def address(mass: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` slots with the most mass (ties: lower index), sorted."""
    count = min(count, len(mass))
    if count <= 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-mass, kind="stable")[:count]
    return np.sort(order)


def coverage(slot_keys: np.ndarray, row_keys: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row to its nearest slot [M] (-1 when there are no slots);
    in row blocks, like `attention_mass`."""
    if len(slot_keys) == 0:
        return -np.ones(len(row_keys))
    step = block_rows(len(slot_keys))
    return np.concatenate([(row_keys[s:s + step] @ slot_keys.T).max(axis=1)
                           for s in range(0, len(row_keys), step)] or [np.zeros(0)])


def choose_new(priority_order: np.ndarray, covered: np.ndarray, count: int) -> np.ndarray:
    """The first `count` rows of `priority_order` that are not `covered`; if too few are
    uncovered, covered rows fill the rest in priority order."""
    order = np.asarray(priority_order)
    fresh = order[~covered[order]]
    if len(fresh) >= count:
        return fresh[:count]
    return np.concatenate([fresh, order[covered[order]][: count - len(fresh)]])


def evict(influence: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the `keep` most influential slots (the rest are evicted), sorted."""
    if keep >= len(influence):
        return np.arange(len(influence))
    return np.sort(np.argsort(-influence, kind="stable")[:keep])
