"""One worker's share of a stage: the continual pass, teacher labels, outer steps.

`Distiller` holds no Ray: data-parallel workers pass `allreduce` (a list of tensors ->
their means across workers, sparse embedding gradients included); with one worker it
returns them as they are. Every random choice
(inner architecture, starting point, fresh initialisation) derives from
(seed, stage, step), so all workers make the same choice and apply identical updates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from diet_ray.config import DistillConfig
from diet_ray.data.batch import SparseBatch
from diet_ray.data.schema import Schema
from diet_ray.distill.bilevel import (
    bilevel_loss,
    gradient_matching_loss,
    model_params,
    touched_rows,
)
from diet_ray.distill.state import RunState, load_state, state_of
from diet_ray.evaluate.train import TrainConfig, loss_fn, make_optimizer, set_sparse_embeddings
from diet_ray.memory.slots import MemoryTensors
from diet_ray.models import build_model

RELABEL_CHUNK = 8192  # memory slots per forward pass of the teacher labels

AllReduce = Callable[[list[torch.Tensor]], list[torch.Tensor]]


def no_allreduce(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Single worker: nothing to average."""
    return tensors


def seeded(*parts: int) -> int:
    """A 63-bit seed derived from integers (run seed, stage, step, purpose)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


class Distiller:
    """Stage `stage` of a run, starting from `state` with `addressed` slots learnable."""

    def __init__(self, cfg: DistillConfig, schema: Schema, state: RunState, stage: int,
                 addressed: np.ndarray, new: np.ndarray, allreduce: AllReduce = no_allreduce):
        self.cfg, self.schema, self.stage = cfg, schema, stage
        self.state = state
        self.new = np.asarray(new, np.int64)
        self.allreduce = allreduce
        torch.manual_seed(seeded(cfg.seed, 0, 0, 1))  # stage 0: the same init on every worker
        self.continual = build_model(cfg.continual.arch, schema)
        set_sparse_embeddings(self.continual, cfg.continual.sparse_embeddings)
        if state.continual:
            load_state(self.continual, state.continual)
        self.memory = MemoryTensors(state.slots, addressed)
        self.log_lr = torch.tensor(state.log_lr, requires_grad=True)
        self.stats: dict[str, float] = {}

    # -- the full-data trajectory ---------------------------------------------------------------
    def continual_pass(self, batches: Iterable[SparseBatch], steps: int) -> None:
        """Exactly `steps` data-parallel Adam steps of the continual model (one pass)."""
        opt = make_optimizer(self.continual, TrainConfig(lr=self.cfg.continual.lr))
        self.continual.train()
        rows, start, it = 0, time.perf_counter(), iter(batches)
        for _ in range(steps):
            batch = next(it)
            opt.zero_grad()
            loss_fn(self.continual(batch), batch).backward()
            learning = [p for p in self.continual.parameters() if p.grad is not None]
            for p, g in zip(learning, self.allreduce([p.grad for p in learning])):
                p.grad = g
            opt.step()
            rows += len(batch)
        self.continual.eval()
        self.stats.update(continual_rows=rows, continual_seconds=time.perf_counter() - start)

    # -- teacher labels ---------------------------------------------------------------------------
    @torch.no_grad()
    def relabel(self) -> None:
        """New slots (or all, `memory.relabel=all`) take the continual model's soft label,
        `RELABEL_CHUNK` slots per forward pass: the pass's activations are O(chunk), not
        O(memory), so a growing memory does not grow the job's peak memory with it."""
        idx = np.arange(len(self.state.slots)) if self.cfg.memory.relabel == "all" else self.new
        if not len(idx):
            return
        clip = self.cfg.memory.label_logit_clip
        logits = torch.cat([
            self.continual(self.memory.batch(torch.from_numpy(idx[s:s + RELABEL_CHUNK])))
            .clamp(-clip, clip) for s in range(0, len(idx), RELABEL_CHUNK)])
        param_row = np.full(len(self.state.slots), -1, np.int64)  # slot -> row of its parameter
        param_row[self.memory.addressed.numpy()] = np.arange(len(self.memory.addressed))
        rows = param_row[idx]
        learnable = torch.from_numpy(rows >= 0)
        self.memory.params["label_logit"].data[torch.from_numpy(rows[rows >= 0])] = \
            logits[learnable]
        self.memory.frozen["label_logit"][torch.from_numpy(idx[rows < 0])] = logits[~learnable]

    # -- outer steps -------------------------------------------------------------------------------
    def inner_start(self, step: int) -> tuple[str, torch.nn.Module, int]:
        """(architecture, model, pool index) of outer step `step`: sampled from the pool,
        from a trajectory checkpoint with probability `trajectory_fraction` when the
        architecture is the continual one, else a fresh seeded initialisation."""
        b = self.cfg.bilevel
        rng = np.random.default_rng(seeded(self.cfg.seed, self.stage, step, 2))
        i = int(rng.integers(len(b.inner_archs)))
        arch = b.inner_archs[i]
        torch.manual_seed(seeded(self.cfg.seed, self.stage, step, 3))
        model = build_model(arch, self.schema)
        trajectory = self.state.trajectory
        if (arch == self.cfg.continual.arch and trajectory
                and rng.random() < b.trajectory_fraction):
            load_state(model, trajectory[int(rng.integers(len(trajectory)))])
        return arch, model, i

    def inner_rows(self, step: int) -> torch.Tensor | None:
        """Memory rows of outer step `step`'s inner loop, at most `bilevel.inner_batch`
        (None: the whole memory fits): every addressed slot and a seeded sample of the others,
        or, when the addressed slots alone exceed the cap, a seeded sample of them."""
        cap, n = self.cfg.bilevel.inner_batch, len(self.state.slots)
        if cap is None or n <= cap:
            return None
        addressed = self.memory.addressed.numpy()
        rng = np.random.default_rng(seeded(self.cfg.seed, self.stage, step, 11))
        if len(addressed) >= cap:
            return torch.from_numpy(np.sort(rng.choice(addressed, cap, replace=False)))
        others = np.setdiff1d(np.arange(n), addressed)
        extra = rng.choice(others, cap - len(addressed), replace=False)
        return torch.from_numpy(np.sort(np.concatenate([addressed, extra])))

    def outer_steps(self, real: Iterator[SparseBatch]) -> None:
        """`bilevel.outer_steps` updates of the addressed slots (and the inner step sizes)."""
        b = self.cfg.bilevel
        params = [self.memory.params[name] for name in b.learn] + [self.log_lr]
        if not len(self.memory.addressed) or b.outer_steps == 0:
            self.stats.update(outer_steps=0, outer_loss=float("nan"))
            return
        opt = torch.optim.Adam(params, lr=b.outer_lr)
        losses, start = [], time.perf_counter()
        for step in range(b.outer_steps):
            _arch, model, i = self.inner_start(step)
            batch = next(real)
            opt.zero_grad()
            theta, buffers, (mem, batch) = touched_rows(
                model, model_params(model), [self.memory.batch(self.inner_rows(step)), batch])
            if b.objective == "bilevel":
                lr = torch.exp(self.log_lr[i])
                loss = bilevel_loss(model, theta, lambda m=mem: m, batch, b.inner_steps, lr,
                                    buffers)
            else:
                loss = gradient_matching_loss(model, theta, mem, batch, buffers)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            for p, g in zip(params, self.allreduce(grads)):
                p.grad = g
            opt.step()
            losses.append(float(loss.detach()))
        self.stats.update(outer_steps=b.outer_steps, outer_loss=float(np.mean(losses[-5:])),
                          outer_seconds=time.perf_counter() - start)

    # -- result ------------------------------------------------------------------------------------
    def result(self, stage_rows: int) -> RunState:
        slots = self.memory.updated_slots()
        slots.updates[self.memory.addressed.numpy()] += 1
        continual = state_of(self.continual)
        keep = self.cfg.influence.checkpoints
        return RunState(
            slots=slots,
            continual=continual,
            trajectory=(self.state.trajectory + [continual])[-keep:],
            log_lr=self.log_lr.detach().numpy().copy(),
            rows_seen=self.state.rows_seen + stage_rows,
        )
