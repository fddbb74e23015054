"""The `diet-ray` command: one sub-command per job, each a thin call into the library."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

from diet_ray.data.errors import DataError

log = logging.getLogger("diet_ray")


# -- fetch ---------------------------------------------------------------------------------
def _fetch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=["movielens-100k"])
    p.add_argument("--force", action="store_true", help="fetch again even if cached")


def run_fetch(args: argparse.Namespace) -> int:
    from diet_ray.data.fetch import fetch_movielens_100k

    print(fetch_movielens_100k(force=args.force))
    return 0


# -- prepare -------------------------------------------------------------------------------
def _prepare_args(p: argparse.ArgumentParser) -> None:
    from diet_ray.data.sources import SOURCES

    p.add_argument("--source", required=True, choices=sorted(SOURCES))
    p.add_argument("--input", help="raw file or folder (any fsspec URI); "
                   "movielens-100k defaults to the fetched copy; synthetic takes none")
    p.add_argument("--output", required=True, help="output URI (local path, s3://..., ...)")
    p.add_argument("--stage-by", default="day",
                   help="hour | day | week | 6h | 2d | rows:N | stages:S (default: day)")
    p.add_argument("--config", help="YAML column description (csv / parquet sources) or "
                   "source options (kuairand, taobao, tmall, criteo, synthetic)")
    p.add_argument("--min-count", type=int, default=1,
                   help="values seen fewer times map to the OOV id (default 1)")
    p.add_argument("--max-vocab", type=int, default=2_000_000,
                   help="fields with more distinct values are hashed (default 2,000,000)")
    p.add_argument("--hash-buckets", type=int, default=1 << 20)
    p.add_argument("--rows-per-shard", type=int, default=500_000)
    p.add_argument("--dataset", default="", help="dataset name recorded in schema.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")


def run_prepare(args: argparse.Namespace) -> int:
    from diet_ray.data.fetch import fetch_movielens_100k
    from diet_ray.data.prepare import PrepareOptions, prepare
    from diet_ray.data.sources import build_source

    source_input = args.input
    if source_input is None:
        if args.source == "synthetic":
            source_input = ""  # generated: no input
        elif args.source == "movielens-100k":
            source_input = str(fetch_movielens_100k())
        else:
            raise DataError(f"--source {args.source} needs --input PATH_OR_URI")
    for key in ("min_count", "max_vocab", "hash_buckets", "rows_per_shard"):
        if getattr(args, key) < 1:
            raise DataError(f"--{key.replace('_', '-')} must be at least 1")
    source = build_source(args.source, source_input, args.config)
    opts = PrepareOptions(
        stage_by=args.stage_by, min_count=args.min_count, max_vocab=args.max_vocab,
        hash_buckets=args.hash_buckets, rows_per_shard=args.rows_per_shard,
        overwrite=args.overwrite, dataset=args.dataset or args.source,
    )
    schema = prepare(source, args.output, opts)
    print(f"{schema.dataset}: {schema.total_rows:,} rows, {len(schema.stages)} stages, "
          f"positive rate {schema.positive_rate:.3f} -> {args.output}")
    for s in schema.stages:
        print(f"  stage {s.index:3d}: {s.rows:>10,} rows  [{s.start} .. {s.end}]")
    return 0


def _distill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="prepared dataset URI")
    p.add_argument("--out", required=True, help="output URI: snapshots, config.json")
    p.add_argument("--budget", type=float, help="memory size as a share of rows seen (0.02)")
    p.add_argument("--stages", type=int, help="distil stages 0..N-1 (default: all)")
    p.add_argument("--config", help="YAML config (see jobs/configs/)")
    p.add_argument("--evaluate-every", type=int, metavar="N",
                   help="evaluate every Nth snapshot (and the last) while distilling; "
                   "results in OUT/eval/")
    p.add_argument("--evaluate-archs", default="deepfm,dcn,fm",
                   help="architectures for --evaluate-every (default deepfm,dcn,fm)")
    p.add_argument("--evaluate-seeds", type=int, default=1,
                   help="training seeds per architecture for --evaluate-every (default 1)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. bilevel.outer_steps=5")


def distill_config(args: argparse.Namespace):
    from diet_ray.config import load_config

    overrides = list(args.overrides)
    if args.budget is not None:
        overrides.insert(0, f"memory.budget={args.budget}")
    return load_config(args.config, overrides, data=args.data, out=args.out, stages=args.stages)


def run_distill(args: argparse.Namespace) -> int:
    from diet_ray.pipeline import distill

    cfg = distill_config(args)
    during = None
    if args.evaluate_every is not None:
        from diet_ray.evaluate.evaluate_every import EvaluateEvery

        during = EvaluateEvery(cfg.out, cfg.data, args.evaluate_every,
                               [a for a in args.evaluate_archs.split(",") if a],
                               args.evaluate_seeds, seed=cfg.seed).watching
    manifest = distill(cfg, during)
    print(f"committed stage {manifest['stage']} (version {manifest['version']}) in {args.out}")
    return 0


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="runs", help="where data, snapshots and results go")
    p.add_argument("--budget", type=float, default=0.02)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--archs", default="deepfm,dcn,fm")
    p.add_argument("overrides", nargs="*", help="dotted distillation overrides")


def run_main(args: argparse.Namespace) -> int:
    from diet_ray.main_job import run_main_job

    run_main_job(args.workdir, args.budget, args.seeds, args.archs.split(","), args.overrides)
    return 0


def delegate(module: str) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[..., int]]:
    """(add_args, run) of a module that defines both; imported only when used."""

    def add_args(p: argparse.ArgumentParser) -> None:
        importlib.import_module(module).add_args(p)

    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(module).run(args)

    return add_args, run


# name -> (help, add_args(parser), run(args) -> exit code)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[..., int]]] = {
    "fetch": ("download an embedded dataset into the user cache, verified", _fetch_args, run_fetch),
    "prepare": ("raw logs -> stage-partitioned Parquet + schema.json", _prepare_args, run_prepare),
    "run": (("the main job on MovieLens 100K: fetch, prepare, distil at 2%%, compare with "
             "random samples"), _run_args, run_main),
    "distill": ("distil a prepared stream into a memory, stage by stage, on Ray",
                _distill_args, run_distill),
    "evaluate": (("Ray Tune fan-out: architectures x seeds trained on a snapshot, tested on "
                  "the next stage"), *delegate("diet_ray.evaluate.tune_eval")),
    "search": (("architecture and hyper-parameter search on a snapshot (Ray Tune, ASHA); "
                "optionally verified on the full stream"), *delegate("diet_ray.evaluate.search")),
    "bench-speed": ("training and scoring throughput: sparse vs dense embedding updates",
                    *delegate("diet_ray.evaluate.speed")),
    "bench-distill": (("the distillation job's speed: Ray Data scoring vs in-process forward, "
                       "stage cost vs one continual pass, peak memory"),
                      *delegate("diet_ray.evaluate.distill_speed")),
    "zoo": (("full-data reference: every architecture, one continual pass, test on the last "
             "stage"), *delegate("diet_ray.evaluate.zoo")),
    "benchmark": (("DIET vs baselines at one budget: fidelity, rank consistency, cost; "
                   "results.json, report.md, plots"), *delegate("diet_ray.evaluate.benchmark")),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diet-ray",
        description="Streaming dataset distillation for recommender systems, on Ray.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, _run) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
    )
    _help, _add, run = COMMANDS[args.command]
    try:
        return run(args)
    except DataError as e:
        print(f"diet-ray {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diet-ray {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
