"""The run's state at a stage boundary, and its flat-array form (what the memory actor
holds and the snapshot stores).

    memory/*            the slots (see `diet_ray.memory.slots`)
    continual/<param>   the continual model's parameters after the stage
    trajectory/<c>/<p>  its last C checkpoints, oldest first (inner-loop starting points
                        and TracIn checkpoints)
    bilevel/log_lr      learnable inner step size per inner architecture [len(pool)]
    stream/rows_seen    rows of the stream seen so far [1]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from diet_ray.memory.slots import Slots

State = dict[str, np.ndarray]


@dataclass
class RunState:
    """Slots + continual model + trajectory + inner step sizes + rows seen."""

    slots: Slots
    continual: State
    trajectory: list[State]
    log_lr: np.ndarray
    rows_seen: int

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = dict(self.slots.to_arrays())
        out.update({f"continual/{k}": v for k, v in self.continual.items()})
        for c, state in enumerate(self.trajectory):
            out.update({f"trajectory/{c}/{k}": v for k, v in state.items()})
        out["bilevel/log_lr"] = self.log_lr.astype(np.float32)
        out["stream/rows_seen"] = np.array([self.rows_seen], np.int64)
        return out

    @staticmethod
    def from_arrays(arrays: dict[str, np.ndarray]) -> RunState:
        continual = {k[len("continual/"):]: np.array(v) for k, v in arrays.items()
                     if k.startswith("continual/")}
        by_checkpoint: dict[int, State] = {}
        for k, v in arrays.items():
            if k.startswith("trajectory/"):
                _, c, name = k.split("/", 2)
                by_checkpoint.setdefault(int(c), {})[name] = np.array(v)
        return RunState(
            slots=Slots.from_arrays(arrays),
            continual=continual,
            trajectory=[by_checkpoint[c] for c in sorted(by_checkpoint)],
            log_lr=np.array(arrays["bilevel/log_lr"]),
            rows_seen=int(arrays["stream/rows_seen"][0]),
        )


def state_of(model: nn.Module) -> State:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_state(model: nn.Module, state: State) -> nn.Module:
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return model
