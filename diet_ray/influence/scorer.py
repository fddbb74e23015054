"""TracIn-style influence of each row, in closed form on the model's last layer.

For logistic loss the gradient of a row's loss with respect to the final linear layer
(weight and bias, input h(x) [H]) is g(x) = (p - y) * [h(x), 1]. With the probe gradient
G_c = mean over a recent validation sample of g_c, the influence of a row over the last C
checkpoints of the continual model is

    score(x) = sum_c < g_c(x), G_c >          (one forward pass per checkpoint)

Positive scores are proponents: a step on the row lowers the probe loss. The row's
address key is its last hidden layer h(x) of the newest checkpoint through a fixed random
projection [H, key_dim], unit-normalised; its stratum is label × nearest key centroid.

`InfluenceScorer` scores one stage's Arrow batches (in-process, or inside the Ray Data
actor pool's `StreamScorer`): prepared rows in, the same rows plus `_score`, `_priority`,
`_prob`, `_stratum`, `_key` and `_node` (the scoring node's id) out, keeping only each
stratum's best rows of the batch (the downstream merge keeps O(m) rows, never O(stage)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from diet_ray.data.batch import SparseBatch, collate
from diet_ray.data.schema import Schema

RankBy = Literal["influence", "alignment", "random"]


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's final `nn.Linear` with one output: the layer the closed form uses."""
    found = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 1]
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no final nn.Linear(…, 1); influence scoring needs a "
            "model with a hidden layer (e.g. continual.arch=dnn, deepfm, dcn)"
        )
    return found[-1]


@torch.no_grad()
def logits_and_hidden(model: nn.Module, batch: SparseBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B], h [B, H]) where h is the input of the final linear layer."""
    captured: list[torch.Tensor] = []
    handle = last_linear(model).register_forward_hook(lambda m, i, o: captured.append(i[0]))
    try:
        logits = model(batch)
    finally:
        handle.remove()
    return logits, captured[-1].reshape(len(batch), -1)


def row_gradients(model: nn.Module, batch: SparseBatch
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form last-layer loss gradients per row [B, H+1], probabilities [B] and the
    last layer's input h [B, H], from one forward pass."""
    logits, h = logits_and_hidden(model, batch)
    p = torch.sigmoid(logits)
    coef = (p - batch.labels) * batch.sample_weight
    g = torch.cat([h, torch.ones(len(batch), 1)], dim=1) * coef[:, None]
    return g, p, h


def probe_gradient(model: nn.Module, probe: SparseBatch) -> torch.Tensor:
    """G = mean last-layer loss gradient over the probe rows [H+1] (weighted mean)."""
    g, _, _ = row_gradients(model, probe)
    return g.sum(0) / probe.sample_weight.sum()


def influence_scores(models: Sequence[nn.Module], probes: Sequence[torch.Tensor],
                     batch: SparseBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TracIn over checkpoints: (score [B], alignment [B], prob [B], h [B, H]) where
    alignment is the cosine between the row's and the probe's gradient (newest checkpoint)
    and prob / h are the newest checkpoint's. One forward pass per checkpoint."""
    score = torch.zeros(len(batch))
    for model, g_probe in zip(models, probes):
        g, p, h = row_gradients(model, batch)
        score += g @ g_probe
    align = (g @ g_probe) / (g.norm(dim=1) * g_probe.norm()).clamp_min(1e-12)
    return score.numpy(), align.numpy(), p.numpy(), h.numpy()


def address_keys(h: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Unit-norm keys [B, key_dim] = normalise(h @ projection)."""
    k = h @ projection
    return k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)


def strata(labels: np.ndarray, keys: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Stratum id = label × num_clusters + nearest centroid (cosine) [B]."""
    cluster = np.argmax(keys @ centroids.T, axis=1)
    return (labels >= 0.5).astype(np.int64) * len(centroids) + cluster


def top_per_stratum(stratum: np.ndarray, priority: np.ndarray, quotas: np.ndarray) -> np.ndarray:
    """Indices of each stratum's `quotas[s]` highest-priority rows (ties: lower index)."""
    order = np.lexsort((np.arange(len(priority)), -priority, stratum))
    s_sorted = stratum[order]
    starts = np.searchsorted(s_sorted, s_sorted, side="left")
    rank = np.arange(len(order)) - starts
    return np.sort(order[rank < quotas[s_sorted]])


class InfluenceScorer:
    """Scores one stage's Arrow batches of prepared rows (module docstring).

    Built from plain data (no driver globals): the schema as JSON, the architecture and
    model config, the checkpoints' state dicts (oldest first), the probe gradients, the key
    projection, the centroids and the per-stratum quotas. A call runs the forward passes
    `batch_size` rows at a time (None: the whole table at once) and selects over the table.
    """

    def __init__(self, schema_json: str, arch: str, model_config: dict, states: list,
                 probes: list[np.ndarray], projection: np.ndarray, centroids: np.ndarray,
                 quotas: np.ndarray, rank_by: RankBy, seed: int, threads: int | None = None,
                 batch_size: int | None = None):
        import ray

        from diet_ray.models import build_model

        if threads:
            torch.set_num_threads(threads)
        self.schema = Schema.from_json(schema_json)
        self.models = []
        for state in states:
            model = build_model(arch, self.schema, model_config)
            model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
            model.eval()
            self.models.append(model)
        self.probes = [torch.from_numpy(np.array(p, np.float32)) for p in probes]  # writable copy
        self.projection, self.centroids = projection, centroids
        self.quotas, self.rank_by, self.batch_size = quotas, rank_by, batch_size
        self.rng = np.random.default_rng(seed)
        self.node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"

    def __call__(self, table: pa.Table, marker_if_empty: bool = False) -> pa.Table:
        """The batch's kept rows with the scoring columns. With `marker_if_empty`, a `_take`
        column marks them True, and a batch that keeps no row returns its first row with
        `_take = False` instead (so that a stream of scored batches never skips one)."""
        step = self.batch_size or max(table.num_rows, 1)
        chunks = [self._forward(table.slice(i, step)) for i in range(0, table.num_rows, step)]
        score, align, prob, h, labels = (np.concatenate(parts) for parts in zip(*chunks))
        keys = address_keys(h, self.projection).astype(np.float32)
        stratum = strata(labels, keys, self.centroids)
        priority = {"influence": score, "alignment": align,
                    "random": self.rng.random(len(score))}[self.rank_by]
        keep = top_per_stratum(stratum, priority, self.quotas)
        take = np.ones(len(keep), bool)
        if marker_if_empty and len(keep) == 0 and table.num_rows:
            keep, take = np.zeros(1, np.int64), np.zeros(1, bool)
        out = table.take(pa.array(keep))
        key_dim = keys.shape[1]
        flat = pa.array(keys[keep].reshape(-1))
        out = (
            out.append_column("_score", pa.array(score[keep].astype(np.float32)))
            .append_column("_priority", pa.array(priority[keep].astype(np.float32)))
            .append_column("_prob", pa.array(prob[keep].astype(np.float32)))
            .append_column("_stratum", pa.array(stratum[keep]))
            .append_column("_key", pa.FixedSizeListArray.from_arrays(flat, key_dim))
            .append_column("_node", pa.array([self.node] * len(keep), pa.string()))
        )
        return out.append_column("_take", pa.array(take)) if marker_if_empty else out

    def _forward(self, table: pa.Table) -> tuple[np.ndarray, ...]:
        """(score, alignment, prob, h, labels) of the rows of `table` (`influence_scores`)."""
        batch = collate(table, self.schema)
        return (*influence_scores(self.models, self.probes, batch), batch.labels.numpy())
