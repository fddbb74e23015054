"""Raw-format sources, one file each; `SOURCES` maps a `--source` name to its builder.

A builder takes `(input_uri, config_path)` and returns a `Source`; only the generic
`csv` / `parquet` sources need a config file. For kuairand, taobao, tmall, criteo and
synthetic an optional YAML config holds keyword options of the source's constructor (see
each module's docstring), e.g. `positive: [buy]` for taobao. The synthetic source
generates its log and ignores `input_uri`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from diet_ray.data.errors import DataError
from diet_ray.data.fs import open_fs, storage_errors
from diet_ray.data.sources.avazu import Avazu
from diet_ray.data.sources.base import FieldSpec, Source
from diet_ray.data.sources.criteo import Criteo
from diet_ray.data.sources.generic import Generic, GenericConfig
from diet_ray.data.sources.kuairand import KuaiRand
from diet_ray.data.sources.movielens import MovieLens
from diet_ray.data.sources.synthetic import Synthetic
from diet_ray.data.sources.taobao import Taobao
from diet_ray.data.sources.tmall import Tmall


def _generic(fmt: str) -> Callable[[str, str | None], Source]:
    def build(input_uri: str, config: str | None) -> Source:
        if not config:
            raise DataError(f"--source {fmt} needs --config FILE.yaml describing the columns")
        return Generic(input_uri, GenericConfig.load(config), fmt)

    return build


def _with_options(cls: type[Source], known: set[str]) -> Callable[[str, str | None], Source]:
    """A builder passing the optional YAML mapping at config_path as keyword options."""

    def build(input_uri: str, config: str | None) -> Source:
        options: dict[str, Any] = {}
        if config:
            fs, path = open_fs(config)
            try:
                with fs.open(path, "rb") as f:
                    options = yaml.safe_load(f) or {}
            except FileNotFoundError:
                raise DataError(f"{config}: config file not found") from None
            except yaml.YAMLError as e:
                raise DataError(f"{config}: not valid YAML ({e})") from None
            if not isinstance(options, dict):
                raise DataError(f"{config}: expected a mapping of options {sorted(known)}")
            unknown = set(options) - known
            if unknown:
                raise DataError(f"{config}: unknown option(s) {sorted(unknown)} for "
                                f"{cls.__name__}; known: {sorted(known)}")
        return cls(input_uri, **options)

    return build


SOURCES: dict[str, Callable[[str, str | None], Source]] = {
    "movielens": lambda uri, _cfg: MovieLens(uri),
    "movielens-100k": lambda uri, _cfg: MovieLens(uri),
    "csv": _generic("csv"),
    "parquet": _generic("parquet"),
    "kuairand": _with_options(KuaiRand, {"label", "logs"}),
    "taobao": _with_options(Taobao, {"positive", "time_range"}),
    "tmall": _with_options(Tmall, {"positive", "year"}),
    "criteo": _with_options(Criteo, {"log_dense"}),
    "avazu": lambda uri, _cfg: Avazu(uri),
    "synthetic": _with_options(Synthetic, {"rows", "fields", "vocab", "zipf", "drift", "days",
                                           "positive_rate", "seed", "chunk_rows"}),
}


def build_source(name: str, input_uri: str, config: str | None = None) -> Source:
    """The source called `name` reading `input_uri`; an unknown name lists the valid ones."""
    if name not in SOURCES:
        raise DataError(f"unknown --source {name!r}; choose one of {sorted(SOURCES)}")
    with storage_errors(input_uri):
        return SOURCES[name](input_uri, config)


__all__ = ["SOURCES", "FieldSpec", "Source", "build_source"]
