"""Ray job entry point for distillation: `ray job submit --working-dir . -- python
jobs/distill.py --data s3://bucket/prepared --out s3://bucket/runs/r1 --budget 0.02
[--config jobs/configs/movielens.yaml] [key=value ...]`. Same flags as `diet-ray distill`;
runs unchanged locally (starts local Ray) or on a cluster (RAY_ADDRESS is set by the job)."""

import sys

from diet_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
