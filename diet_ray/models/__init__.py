"""The CTR model zoo: the `MODELS` registry and `build_model`.

Every model is an `nn.Module` built as ``Model(schema, config)`` whose ``forward(batch:
SparseBatch)`` returns logits ``[B]`` (no sigmoid, loss, optimiser or device moves), so
`torch.func.functional_call` works on all of them, twice differentiably.

| name        | model    | idea                                                        |
|-------------|----------|-------------------------------------------------------------|
| `lr`        | LR       | bias + first-order weights                                  |
| `fm`        | FM       | LR + pairwise ``<v_i, v_j>``                                |
| `dnn`       | DNN      | MLP on concatenated embeddings                              |
| `wide_deep` | WideDeep | LR + MLP                                                    |
| `deepfm`    | DeepFM   | LR + FM + MLP on shared embeddings                          |
| `dcn`       | DCN      | cross network ``x0 (w . x) + b + x`` beside an MLP          |
| `dcnv2`     | DCNv2    | matrix cross ``x0 (W x + b) + x`` (opt. low-rank MoE) + MLP |
| `xdeepfm`   | XDeepFM  | LR + compressed interaction network + MLP                   |
| `autoint`   | AutoInt  | multi-head self-attention over features                     |
| `fibinet`   | FiBiNET  | LR + SENET + bilinear interactions -> MLP                   |
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, NamedTuple

from torch import nn

from diet_ray.data.schema import Schema
from diet_ray.models.autoint import AutoInt, AutoIntConfig
from diet_ray.models.dcn import DCN, DCNConfig
from diet_ray.models.dcnv2 import DCNv2, DCNv2Config
from diet_ray.models.deepfm import DeepFM, DeepFMConfig
from diet_ray.models.dnn import DNN, DNNConfig
from diet_ray.models.fibinet import FiBiNET, FiBiNETConfig
from diet_ray.models.fm import FM, FMConfig
from diet_ray.models.lr import LR, LRConfig
from diet_ray.models.wide_deep import WideDeep, WideDeepConfig
from diet_ray.models.xdeepfm import XDeepFM, XDeepFMConfig


class ModelEntry(NamedTuple):
    """One registered architecture: its module class and its config dataclass."""

    model: type[nn.Module]
    config: type


MODELS: dict[str, ModelEntry] = {
    "lr": ModelEntry(LR, LRConfig),
    "fm": ModelEntry(FM, FMConfig),
    "dnn": ModelEntry(DNN, DNNConfig),
    "wide_deep": ModelEntry(WideDeep, WideDeepConfig),
    "deepfm": ModelEntry(DeepFM, DeepFMConfig),
    "dcn": ModelEntry(DCN, DCNConfig),
    "dcnv2": ModelEntry(DCNv2, DCNv2Config),
    "xdeepfm": ModelEntry(XDeepFM, XDeepFMConfig),
    "autoint": ModelEntry(AutoInt, AutoIntConfig),
    "fibinet": ModelEntry(FiBiNET, FiBiNETConfig),
}


def _entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid models: {sorted(MODELS)}") from None


def model_config(name: str, **overrides: Any) -> Any:
    """The config dataclass of model `name` with `overrides` applied (validated)."""
    config_cls = _entry(name).config
    valid = [f.name for f in fields(config_cls)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for model {name!r}; valid keys: {valid}")
    return config_cls(**overrides)


def build_model(name: str, schema: Schema, config: dict[str, Any] | Any | None = None) -> nn.Module:
    """Build model `name` for `schema`; `config` is a dict of overrides, the model's own
    config dataclass, or None for the defaults."""
    entry = _entry(name)
    if config is None or isinstance(config, dict):
        config = model_config(name, **(config or {}))
    elif not isinstance(config, entry.config):
        raise ValueError(
            f"model {name!r} takes a {entry.config.__name__} (or a dict), "
            f"got a {type(config).__name__}"
        )
    return entry.model(schema, config)


__all__ = [
    "DCN",
    "DNN",
    "FM",
    "LR",
    "MODELS",
    "AutoInt",
    "AutoIntConfig",
    "DCNConfig",
    "DCNv2",
    "DCNv2Config",
    "DNNConfig",
    "DeepFM",
    "DeepFMConfig",
    "FMConfig",
    "FiBiNET",
    "FiBiNETConfig",
    "LRConfig",
    "ModelEntry",
    "WideDeep",
    "WideDeepConfig",
    "XDeepFM",
    "XDeepFMConfig",
    "build_model",
    "model_config",
]
