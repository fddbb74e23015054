"""The distillation job on a three-node Ray cluster on this machine (a head and two worker
nodes, `ray.cluster_utils.Cluster`): Train workers on different nodes, scorers spread, and
a worker node removed mid-run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import ray

from diet_ray.memory.store import SnapshotStore
from diet_ray.pipeline import NAMESPACE, distill
from tests.integration.tiny_run import config, manifests, prepare_tiny_stream, run_into

pytestmark = pytest.mark.slow

# tiny blocks: a 100-row stage must make several blocks for both scorers to get work
SPREAD = ["train.placement_strategy=STRICT_SPREAD", "influence.scheduling=SPREAD",
          "influence.num_scorers=2", "influence.block_mb=0.001", "influence.batch_size=16"]
# fail a lost node within seconds rather than the default tens of seconds
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                      "health_check_failure_threshold": 4}


@pytest.fixture(scope="module")
def cluster() -> Iterator:
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": 96 << 20,
        "_system_config": FAST_HEALTH_CHECKS})
    for _ in range(2):
        c.add_node(num_cpus=2, object_store_memory=96 << 20)
    ray.init(address=c.address, namespace=NAMESPACE, logging_level="ERROR",
             configure_logging=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def tiny_stream(tmp_path_factory) -> str:
    return prepare_tiny_stream(tmp_path_factory.mktemp("stream"))


def worker_nodes(cluster) -> dict[str, object]:
    """node id -> Node handle of the two worker (non-head) nodes."""
    return {node.node_id: node for node in cluster.worker_nodes}


def test_train_workers_on_two_nodes_and_scorers_spread(cluster, tiny_stream, tmp_path):
    out = str(tmp_path / "run")
    final = distill(config(tiny_stream, out, *SPREAD))
    assert final["stage"] == 3
    store = SnapshotStore(out)
    for stage in store.stages():
        meta = store.manifest(stage).meta
        assert len(set(meta["train_nodes"])) == 2, meta["train_nodes"]
        assert len(set(meta["scorer_nodes"])) == 2, meta["scorer_nodes"]
    known = {n["NodeID"] for n in ray.nodes()}
    assert set(store.manifest(0).meta["train_nodes"]) <= known


def test_worker_node_removed_mid_run_job_finishes_with_the_same_versions(
        cluster, tiny_stream, tmp_path):
    out = str(tmp_path / "run")
    errors: list[BaseException] = []
    job = threading.Thread(
        target=lambda: run_into(distill, config(tiny_stream, out, *SPREAD), errors))
    job.start()
    deadline = time.time() + 300
    while not SnapshotStore(out).stages() and time.time() < deadline:
        time.sleep(0.2)
    used = SnapshotStore(out).manifest(0).meta["train_nodes"]
    victim = next(node for node_id, node in worker_nodes(cluster).items() if node_id in used)
    cluster.remove_node(victim, allow_graceful=False)
    job.join(timeout=900)
    assert not errors, errors
    assert [v for v, _, _ in manifests(out).values()] == [1, 2, 3, 4]
    later = SnapshotStore(out).manifest(3).meta["train_nodes"]
    assert victim.node_id not in later
