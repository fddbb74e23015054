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
              categorical: np.ndarray) -> Slots:
    """Slots seeded from `rows` (real rows, K_r = rows.ids.shape[2]).

    keys [M, H] unit-norm address keys; categorical [F] bool (which fields take neighbour
    ids); label_logit [M] initial label logits. K = max(candidates, K_r).
    """
    m, f, k_real = rows.ids.shape
    k = max(candidates, k_real)
    ids = np.zeros((m, f, k), np.int64)
    mask = np.zeros((m, f, k), bool)
    logits = np.zeros((m, f, k), np.float32)
    real_ids, real_w = rows.ids.numpy(), rows.weights.numpy()
    ids[:, :, :k_real] = real_ids
    mask[:, :, :k_real] = real_w > 0
    logits[:, :, :k_real] = np.where(real_w > 0, seed_logit, 0.0)
    if candidates > 1 and m > 1:
        labels = rows.labels.numpy() >= 0.5
        neighbours = nearest_same_label(keys, labels, candidates - 1)  # [M, K-1]
        cols = slice(1, candidates)
        own = real_ids[:, :, 0]  # categorical fields keep their id in slot 0
        ids[:, categorical, cols] = own[neighbours][:, :, categorical].transpose(0, 2, 1)
        mask[:, categorical, cols] = neighbours[:, None, :] >= 0
        logits[:, categorical, cols] = 0.0
    return Slots(
        ids=ids, mask=mask, id_logits=logits,
        label_logit=label_logit.astype(np.float32),
        weight_logit=np.zeros(m, np.float32),
        dense=(rows.dense.numpy() if rows.dense is not None
               else np.zeros((m, 0), np.float32)).astype(np.float32),
        key=keys.astype(np.float32),
        influence=influence.astype(np.float32),
        stage=np.full(m, stage, np.int32),
        updates=np.zeros(m, np.int32),
    )


def nearest_same_label(keys: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """For each row, the `n` most similar other rows of the same label by key [M, n];
    -1 where fewer exist. Cosine similarity on unit-norm keys."""
    m = len(keys)
    sims = keys @ keys.T
    np.fill_diagonal(sims, -np.inf)
    sims[labels[:, None] != labels[None, :]] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    valid = np.take_along_axis(sims, order, axis=1) > -np.inf
    out = np.where(valid, order, -1)
    if out.shape[1] < n:
        out = np.concatenate([out, -np.ones((m, n - out.shape[1]), np.int64)], axis=1)
    return out


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
