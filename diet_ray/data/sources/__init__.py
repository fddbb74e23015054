"""Raw-format sources, one file each; `SOURCES` maps a `--source` name to its builder.

A builder takes `(input_uri, config_path)` and returns a `Source`; only the generic
`csv` / `parquet` sources need a config file.
"""

from __future__ import annotations

from collections.abc import Callable

from diet_ray.data.errors import DataError
from diet_ray.data.sources.base import FieldSpec, Source
from diet_ray.data.sources.generic import Generic, GenericConfig
from diet_ray.data.sources.movielens import MovieLens


def _generic(fmt: str) -> Callable[[str, str | None], Source]:
    def build(input_uri: str, config: str | None) -> Source:
        if not config:
            raise DataError(f"--source {fmt} needs --config FILE.yaml describing the columns")
        return Generic(input_uri, GenericConfig.load(config), fmt)

    return build


SOURCES: dict[str, Callable[[str, str | None], Source]] = {
    "movielens": lambda uri, _cfg: MovieLens(uri),
    "movielens-100k": lambda uri, _cfg: MovieLens(uri),
    "csv": _generic("csv"),
    "parquet": _generic("parquet"),
}


def build_source(name: str, input_uri: str, config: str | None = None) -> Source:
    """The source called `name` reading `input_uri`; an unknown name lists the valid ones."""
    if name not in SOURCES:
        raise DataError(f"unknown --source {name!r}; choose one of {sorted(SOURCES)}")
    return SOURCES[name](input_uri, config)


__all__ = ["SOURCES", "FieldSpec", "Source", "build_source"]
