"""The bi-level objective: train an inner model on the memory, score it on real rows.

    inner:  theta_{u+1} = theta_u - lr * grad_theta L(theta_u; memory)      u < U
    outer:  L(theta_U; real batch), differentiated through the unroll (create_graph)
            with respect to the memory's learnable tensors (and the inner step size).

`gradient_matching` is the cheaper alternative: at a trajectory point theta, make the
memory's loss gradient point the way the real rows' gradient does (1 - cosine per tensor).
Models are called with `torch.func.functional_call`, so any registered architecture works.

`touched_rows` shrinks every embedding table to the rows the memory and the real batch
read (ids remapped, table offsets zeroed): plain SGD leaves untouched rows where they are,
so the unroll is exact and its cost follows the batch, not the vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import nn
from torch.func import functional_call

from diet_ray.data.batch import SparseBatch
from diet_ray.evaluate.train import loss_fn
from diet_ray.layers.embedding import SoftEmbedding

Params = dict[str, torch.Tensor]


def model_params(model: nn.Module) -> Params:
    """The model's trainable parameters as fresh leaves (requires_grad) for unrolling."""
    return {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}


def touched_rows(model: nn.Module, params: Params, batches: Sequence[SparseBatch]
                 ) -> tuple[Params, Params, list[SparseBatch]]:
    """(params with every embedding table cut to the rows `batches` read, buffers that zero
    the tables' field offsets, the batches with ids remapped to those rows).

    All tables of a model share the schema's layout (row = id + offset of its field), so
    one sorted set of rows R [U] serves them all: table [V, d] -> table[R] [U, d] (a fresh
    leaf) and ids [B, F, K] -> position of (id + offset) in R.
    """
    tables = [name for name, m in model.named_modules() if isinstance(m, SoftEmbedding)]
    if not tables:
        return params, {}, list(batches)
    offsets = model.get_submodule(tables[0]).offsets  # [F]
    rows = torch.unique(torch.cat([(b.ids + offsets[:, None]).reshape(-1) for b in batches]))
    cut = dict(params)
    for name in tables:
        key = f"{name}.table.weight"
        cut[key] = params[key].detach()[rows].requires_grad_(True)
    buffers = {f"{name}.offsets": torch.zeros_like(offsets) for name in tables}
    remapped = [replace(b, ids=torch.searchsorted(rows, b.ids + offsets[:, None]))
                for b in batches]
    return cut, buffers, remapped


def batch_loss(model: nn.Module, params: Params, batch: SparseBatch,
               buffers: Params | None = None) -> torch.Tensor:
    return loss_fn(functional_call(model, {**params, **(buffers or {})}, (batch,)), batch)


def unroll(model: nn.Module, params: Params, memory: Callable[[], SparseBatch], steps: int,
           lr: torch.Tensor, buffers: Params | None = None) -> Params:
    """U differentiable SGD steps on the memory (full batch); returns theta_U."""
    for _ in range(steps):
        loss = batch_loss(model, params, memory(), buffers)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params = {k: p - lr * g for (k, p), g in zip(params.items(), grads)}
    return params


def bilevel_loss(model: nn.Module, params: Params, memory: Callable[[], SparseBatch],
                 real: SparseBatch, steps: int, lr: torch.Tensor,
                 buffers: Params | None = None) -> torch.Tensor:
    """Outer BCE on `real` after `steps` inner steps on the memory."""
    return batch_loss(model, unroll(model, params, memory, steps, lr, buffers), real, buffers)


def gradient_matching_loss(model: nn.Module, params: Params, memory: SparseBatch,
                           real: SparseBatch, buffers: Params | None = None) -> torch.Tensor:
    """Sum over parameter tensors of 1 - cos(grad on memory, grad on real rows)."""
    names = list(params)
    g_real = torch.autograd.grad(batch_loss(model, params, real, buffers),
                                 [params[n] for n in names])
    g_mem = torch.autograd.grad(batch_loss(model, params, memory, buffers),
                                [params[n] for n in names],
                                create_graph=True, allow_unused=True)
    total = torch.zeros(())
    for gr, gm in zip(g_real, g_mem):
        if gm is None or gr.abs().sum() == 0:
            continue
        total = total + 1 - torch.nn.functional.cosine_similarity(
            gm.flatten(), gr.detach().flatten(), dim=0)
    return total
