"""Ray job entry point for snapshot evaluation: `ray job submit --working-dir . -- python
jobs/evaluate.py --snapshot s3://bucket/runs/r1 --data s3://bucket/prepared --archs
deepfm,dcn,fm --seeds 3 --out s3://bucket/runs/r1/eval`. Same flags as `diet-ray evaluate`."""

import sys

from diet_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
