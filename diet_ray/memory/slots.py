"""Memory slots: the distilled rows, their learnable parts, and the `SparseBatch` they make.

A memory of N slots over F fields with K candidate ids per field (K = max(memory.candidates,
schema.max_len)) and D dense fields, as numpy arrays (the form that travels and is saved):

    ids          [N, F, K] int64    candidate ids per field
    mask         [N, F, K] bool     which candidates exist (others get weight exactly 0)
    id_logits    [N, F, K] float32  learnable mixing logits; weights = masked softmax over K
    label_logit  [N]       float32  learnable; label = sigmoid(label_logit) (a soft label)
    weight_logit [N]       float32  learnable; sample_weight = 2 * sigmoid(weight_logit)
    dense        [N, D]    float32  learnable dense values (standardised scale)
    key          [N, H]    float32  address key (unit norm), fixed once written
    influence    [N]       float32  influence score of the seed row
    stage        [N]       int32    stage the slot was written in
    updates      [N]       int32    how many stages addressed (updated) the slot

A categorical field of a new slot holds its seed row's id in candidate 0 (logit
`seed_logit`) and ids of the K-1 nearest same-label candidate rows (logit 0); a multi-hot
field holds the seed row's values with equal logits (so weights ~ 1/n, as for real rows).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from diet_ray.data.batch import SparseBatch

PREFIX = "memory/"
LEARNABLE = ("id_logits", "label_logit", "weight_logit", "dense")


@dataclass
class Slots:
    """N memory slots as numpy arrays (layout in the module docstring)."""

    ids: np.ndarray
    mask: np.ndarray
    id_logits: np.ndarray
    label_logit: np.ndarray
    weight_logit: np.ndarray
    dense: np.ndarray
    key: np.ndarray
    influence: np.ndarray
    stage: np.ndarray
    updates: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @staticmethod
    def empty(num_fields: int, k: int, num_dense: int, key_dim: int) -> Slots:
        return Slots(
            ids=np.zeros((0, num_fields, k), np.int64),
            mask=np.zeros((0, num_fields, k), bool),
            id_logits=np.zeros((0, num_fields, k), np.float32),
            label_logit=np.zeros(0, np.float32),
            weight_logit=np.zeros(0, np.float32),
            dense=np.zeros((0, num_dense), np.float32),
            key=np.zeros((0, key_dim), np.float32),
            influence=np.zeros(0, np.float32),
            stage=np.zeros(0, np.int32),
            updates=np.zeros(0, np.int32),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {PREFIX + f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def from_arrays(arrays: dict[str, np.ndarray]) -> Slots:
        return Slots(**{f.name: np.array(arrays[PREFIX + f.name]) for f in fields(Slots)})

    def select(self, index: np.ndarray) -> Slots:
        return Slots(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: list[Slots]) -> Slots:
        return Slots(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                        for f in fields(Slots)})


def new_slots(rows: SparseBatch, keys: np.ndarray, influence: np.ndarray, stage: int,
              candidates: int, seed_logit: float, label_logit: np.ndarray,
              categorical: np.ndarray, index: np.ndarray | None = None) -> Slots:
    """Slots seeded from rows `index` of `rows` (default: all; real rows, K_r =
    rows.ids.shape[2]); neighbour ids come from all of `rows`.

    keys [M, H] unit-norm address keys; influence [M]; categorical [F] bool (which fields
    take neighbour ids); label_logit [M] initial label logits. K = max(candidates, K_r).
    """
    m_all, f, k_real = rows.ids.shape
    index = np.arange(m_all) if index is None else np.asarray(index, np.int64)
    m, k = len(index), max(candidates, k_real)
    ids = np.zeros((m, f, k), np.int64)
    mask = np.zeros((m, f, k), bool)
    logits = np.zeros((m, f, k), np.float32)
    all_ids, real_w = rows.ids.numpy(), rows.weights.numpy()[index]
    real_ids = all_ids[index]
    ids[:, :, :k_real] = real_ids
    mask[:, :, :k_real] = real_w > 0
    logits[:, :, :k_real] = np.where(real_w > 0, seed_logit, 0.0)
    if candidates > 1 and m_all > 1:
        labels = rows.labels.numpy() >= 0.5
        neighbours = nearest_same_label(keys, labels, candidates - 1, index)  # [m, K-1]
        cols = slice(1, candidates)
        own = all_ids[:, :, 0]  # categorical fields keep their id in slot 0
        ids[:, categorical, cols] = own[neighbours][:, :, categorical].transpose(0, 2, 1)
        mask[:, categorical, cols] = neighbours[:, None, :] >= 0
        logits[:, categorical, cols] = 0.0
    dense = rows.dense.numpy()[index] if rows.dense is not None else np.zeros((m, 0))
    return Slots(
        ids=ids, mask=mask, id_logits=logits,
        label_logit=np.asarray(label_logit)[index].astype(np.float32),
        weight_logit=np.zeros(m, np.float32),
        dense=dense.astype(np.float32),
        key=keys[index].astype(np.float32),
        influence=np.asarray(influence)[index].astype(np.float32),
        stage=np.full(m, stage, np.int32),
        updates=np.zeros(m, np.int32),
    )


def nearest_same_label(keys: np.ndarray, labels: np.ndarray, n: int,
                       queries: np.ndarray | None = None, block_rows: int = 1024) -> np.ndarray:
    """For each query row (default: every row), the `n` most similar other rows of the same
    label by key [Q, n], most similar first (ties: lower index); -1 where fewer exist.

    keys [M, H] unit norm, labels [M] bool, queries [Q] row indices. Cosine similarity,
    computed `block_rows` queries at a time: memory O(block_rows × M), never O(M²).
    """
    m = len(keys)
    queries = np.arange(m) if queries is None else np.asarray(queries, np.int64)
    out = -np.ones((len(queries), n), np.int64)
    if n <= 0:
        return out
    for label in (False, True):
        pool = np.flatnonzero(labels == label)  # candidate neighbours, ascending index
        asking = np.flatnonzero(labels[queries] == label)  # positions in `queries`
        take = min(n, len(pool) - 1)
        if take <= 0:
            continue
        pool_keys = keys[pool]
        for start in range(0, len(asking), block_rows):
            at = asking[start:start + block_rows]
            sims = keys[queries[at]] @ pool_keys.T  # [b, P]
            sims[pool[None, :] == queries[at][:, None]] = -np.inf  # not its own neighbour
            out[at, :take] = pool[top_k(sims, take)]
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's `k` largest scores [R, k], largest first; ties go to the
    lower index (as a stable descending sort would give), in O(R × C) rather than a sort."""
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1:k]  # the k-th largest value [R, 1]
    above = scores > kth
    ties = scores == kth
    # of the values equal to the k-th, keep the lowest-index ones that fill the k places
    room = k - above.sum(axis=1, keepdims=True)
    keep = above | ties
    crowded = np.flatnonzero(ties.sum(axis=1) > room[:, 0])  # rows with more ties than room
    if len(crowded):
        t = ties[crowded]
        keep[crowded] = above[crowded] | (t & (np.cumsum(t, axis=1) <= room[crowded]))
    cols = np.nonzero(keep)[1].reshape(len(scores), k)  # ascending column order per row
    order = np.lexsort((cols, -np.take_along_axis(scores, cols, axis=1)), axis=1)
    return np.take_along_axis(cols, order, axis=1)


class MemoryTensors:
    """Torch view of `Slots` for distillation: the addressed slots' learnable parts are
    leaf tensors (`params`), everything else is frozen; `batch()` is differentiable in
    `params` and returns exactly the frozen values for slots that are not addressed."""

    def __init__(self, slots: Slots, addressed: np.ndarray) -> None:
        self.slots = slots
        self.addressed = torch.as_tensor(np.asarray(addressed, dtype=np.int64))
        self.ids = torch.from_numpy(slots.ids)
        self.mask = torch.from_numpy(slots.mask)
        self.frozen = {name: torch.from_numpy(np.array(getattr(slots, name))) for name in LEARNABLE}
        self.params = {
            name: self.frozen[name][self.addressed].clone().requires_grad_(True)
            for name in LEARNABLE
        }

    def full(self, name: str) -> torch.Tensor:
        """The whole [N, ...] tensor `name`, with addressed rows taken from `params`."""
        if len(self.addressed) == 0:
            return self.frozen[name]
        return self.frozen[name].index_copy(0, self.addressed, self.params[name])

    def batch(self, index: torch.Tensor | None = None) -> SparseBatch:
        """The memory (or rows `index` of it) as a differentiable SparseBatch."""
        logits = self.full("id_logits")
        ids, mask = self.ids, self.mask
        label, weight, dense = self.full("label_logit"), self.full("weight_logit"), self.full("dense")
        if index is not None:
            ids, mask, logits = ids[index], mask[index], logits[index]
            label, weight, dense = label[index], weight[index], dense[index]
        # masked softmax; a field with no candidate at all (an empty multi-hot) gets 0s
        weights = torch.softmax(logits.masked_fill(~mask, -1e9), dim=-1) * mask
        return SparseBatch(
            ids=ids,
            weights=weights,
            dense=dense if dense.shape[1] else None,
            labels=torch.sigmoid(label),
            sample_weight=2 * torch.sigmoid(weight),
        )

    def updated_slots(self) -> Slots:
        """A copy of the slots with the current parameter values written back."""
        out = Slots(**{f.name: np.array(getattr(self.slots, f.name)) for f in fields(Slots)})
        for name in LEARNABLE:
            setattr(out, name, self.full(name).detach().numpy().copy())
        return out
