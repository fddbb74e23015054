"""The jobs as a cluster runs them: a Ray head started with `ray start`, the distillation and
then the evaluation submitted with `ray job submit` as cluster/README.md shows (the runtime
env of cluster/runtime_env.yaml, the checkout uploaded as the working dir under .rayignore,
the driver placed with the `on_demand` resource, token authentication on), data and results
in s3:// on a loopback S3 server, the credentials coming from the nodes' environment.

The head belongs to this module: its own ports, temp dir and token. It is stopped by process
id (its session, and anything started with its token in the environment), never with
`ray stop`, which stops every Ray process on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from diet_ray.data.prepare import PrepareOptions, prepare
from diet_ray.data.sources import build_source
from diet_ray.memory.store import SnapshotStore
from tests.conftest import GENERIC_YAML, write_click_log
from tests.integration.conftest import free_port
from tests.integration.test_distill_ray import OVERRIDES

# About 80 s on 2 idle cores, 3.5 min while other jobs load them: slow (CI runs slow tests).
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform != "linux", reason="finds its processes in /proc")]

REPO = Path(__file__).resolve().parents[2]
BUCKET = "diet-jobs"
STAGES = 3  # of the 4 prepared stages: evaluation tests the last snapshot on stage 3
JOB_TIMEOUT_S = 300
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass(frozen=True)
class Head:
    address: str  # the dashboard / job API, http://127.0.0.1:PORT
    env: dict[str, str]  # for `ray` commands: token mode and file, this virtualenv first
    token: str
    temp_dir: Path


def ray_executable() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        pytest.fail("no `ray` command beside this Python or on PATH")
    return found


def api(head: Head, path: str) -> dict:
    """GET the job REST API (what the `ray job` commands call), with the cluster's token."""
    request = urllib.request.Request(head.address + path,
                                     headers={"Authorization": f"Bearer {head.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def own_pids(leader: int, marker: bytes) -> list[int]:
    """This head's processes: its session (`ray start --block`, GCS, raylet, workers) and any
    process whose environment holds `marker` (job drivers run in sessions of their own)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) == leader:
                pids.append(pid)
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read():
                    pids.append(pid)
        except OSError:  # gone, or not ours to read
            continue
    return pids


def stop_head(proc: subprocess.Popen, marker: bytes) -> None:
    """SIGTERM to `ray start --block` stops what it started; then whatever is left, by pid."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    left = own_pids(proc.pid, marker)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline and (left := [p for p in left if _alive(p)]):
            time.sleep(0.2)
        if not left:
            return


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_head(s3_endpoint) -> Iterator[Head]:
    """`ray start --head` on loopback, 4 logical CPUs and 4 units of `on_demand` (the head of
    cluster/aws.yaml offers the same resource), token authentication, every fixed port of a
    head (GCS, job API, agent, Ray Client) on a free one. Its environment (AWS_ENDPOINT_URL
    and the suite's fake keys) is the nodes'."""
    missing = [m for m in ("aiohttp_cors", "grpc") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the Ray job API needs ray[default] (missing {missing}): "
                    "pip install -e '.[test]'")
    import ray

    if ray.is_initialized():  # a job run in-process by an earlier module
        ray.shutdown()
    temp_dir = Path(tempfile.mkdtemp(prefix="rjob-"))  # short: Ray's socket paths live in it
    token = secrets.token_hex(32)
    token_file = temp_dir / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file),
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # SIGTERM stops the head at once
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(free_port())
    dashboard, gcs, agent, client = sorted(ports)
    log = (temp_dir / "ray-start.log").open("w")
    proc = subprocess.Popen(
        [ray_executable(), "start", "--head", "--block", "--num-cpus=4",
         '--resources={"on_demand": 4}', "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--port={gcs}",
         f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
         f"--object-store-memory={256 << 20}",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, cwd=temp_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = Head(f"http://127.0.0.1:{dashboard}", env, token, temp_dir)
    try:
        deadline = time.time() + 120
        while True:
            try:
                api(head, "/api/jobs/")
                break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("the Ray head did not start:\n"
                                + (temp_dir / "ray-start.log").read_text()[-5000:])
                time.sleep(1)
        yield head
    finally:
        stop_head(proc, str(token_file).encode())
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def s3_data(s3_endpoint, tmp_path_factory) -> str:
    """The tiny 4-stage stream of test_distill_ray.py, prepared into s3://."""
    import s3fs

    s3fs.S3FileSystem(endpoint_url=s3_endpoint).mkdir(BUCKET)
    root = tmp_path_factory.mktemp("jobstream")
    (root / "log.yaml").write_text(GENERIC_YAML)
    source = build_source("csv", str(write_click_log(root / "log.csv")), str(root / "log.yaml"))
    uri = f"s3://{BUCKET}/prepared/clicks"
    prepare(source, uri, PrepareOptions(stage_by="rows:100"))
    return uri


def ray_cli(head: Head, *args: str) -> subprocess.CompletedProcess:
    """A `ray` command as a user types it, from the repository root."""
    return subprocess.run([ray_executable(), *args], env=head.env, cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)


def submit(head: Head, submission_id: str, *args: str) -> None:
    done = ray_cli(head, "job", "submit", "--address", head.address,
                   "--submission-id", submission_id, *args)
    assert done.returncode == 0, f"ray job submit failed:\n{done.stdout}\n{done.stderr}"


def wait_for(head: Head, submission_id: str) -> str:
    """Poll until the job ends; fail with its logs unless it succeeded. Returns the logs."""
    deadline = time.time() + JOB_TIMEOUT_S
    status = "PENDING"
    while status not in TERMINAL and time.time() < deadline:
        time.sleep(2)
        try:
            status = api(head, f"/api/jobs/{submission_id}")["status"]
        except (urllib.error.URLError, OSError):  # a busy head answers late; ask again
            continue
    logs = ray_cli(head, "job", "logs", submission_id, "--address", head.address).stdout
    if status not in TERMINAL:
        ray_cli(head, "job", "stop", submission_id, "--address", head.address)
    assert status == "SUCCEEDED", f"job {submission_id}: {status}\n{logs[-8000:]}"
    return logs


def test_distill_then_evaluate_submitted_to_a_ray_head(ray_head, s3_data, s3_endpoint):
    import s3fs

    out = f"s3://{BUCKET}/runs/distill"
    overrides = [o for o in OVERRIDES if not o.startswith("memory.budget=")]
    submit(ray_head, "diet-distill", "--runtime-env", "cluster/runtime_env.yaml",
           "--entrypoint-resources", '{"on_demand": 1}', "--no-wait", "--",
           "python", "jobs/distill.py", "--data", s3_data, "--out", out, "--budget", "0.2",
           "--stages", str(STAGES), *overrides)
    logs = wait_for(ray_head, "diet-distill")
    assert f"stage 1/{STAGES} committed (v1)" in logs  # a Train worker's progress, forwarded
    assert f"committed stage {STAGES - 1} (version {STAGES}) in {out}" in logs

    # One snapshot per stage, each committed once, checksums verified, under this config.
    store = SnapshotStore(out)
    assert store.stages() == list(range(STAGES))
    config_hash = json.loads(s3fs.S3FileSystem(endpoint_url=s3_endpoint)
                             .cat_file(f"{BUCKET}/runs/distill/config.json"))["hash"]
    for stage in range(STAGES):
        arrays, manifest = store.load(stage)
        assert (manifest.stage, manifest.version, manifest.config_hash) == (
            stage, stage + 1, config_hash)
        assert arrays and manifest.meta["memory_slots"] == 20 * (stage + 1)  # 20% of each stage

    # The uploaded working dir: the code, without what .rayignore / .gitignore keep out.
    [package] = [p for p in (ray_head.temp_dir / "session_latest" / "runtime_resources"
                             / "working_dir_files").iterdir() if p.is_dir()]
    assert (package / "jobs" / "distill.py").is_file()
    assert (package / "diet_ray" / "data" / "schema.py").is_file()
    for kept_out in (".git", ".venv", ".pytest_cache", "diet_ray.egg-info"):
        assert not (package / kept_out).exists(), kept_out

    # The evaluation job, with the other form of README's command (a plain --working-dir).
    submit(ray_head, "diet-evaluate", "--working-dir", ".",
           "--entrypoint-resources", '{"on_demand": 1}', "--no-wait", "--",
           "python", "jobs/evaluate.py", "--snapshot", out, "--data", s3_data,
           "--archs", "lr,fm", "--seeds", "1", "--out", f"{out}/eval")
    logs = wait_for(ray_head, "diet-evaluate")
    assert f"snapshot stage {STAGES - 1}, tested on stage {STAGES}:" in logs
    rows = json.loads(s3fs.S3FileSystem(endpoint_url=s3_endpoint)
                      .cat_file(f"{BUCKET}/runs/distill/eval/results.json"))
    assert [r["arch"] for r in rows] == ["lr", "fm"]
    assert all(0.0 <= r["auc"] <= 1.0 and r["test_stage"] == STAGES for r in rows)
