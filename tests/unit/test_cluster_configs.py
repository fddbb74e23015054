"""The cluster files under cluster/ and .rayignore, checked against what will read them: the
launcher schema and config preparation of the installed Ray, the launcher's AWS bootstrap and
node launch on a mocked AWS account, the KubeRay field names, the `diet-ray` argument parser
for every job entry point, the installed Ray CLI for every `ray` command of cluster/README.md,
and Ray's own working-dir packaging for .rayignore. No cluster, no cloud account."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import re
import shlex
import zipfile
from pathlib import Path

import pytest
import yaml

from diet_ray.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
README = CLUSTER / "README.md"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def ray_schema() -> dict:
    """The launcher's JSON schema as shipped inside the installed ray package."""
    [ray_dir] = importlib.util.find_spec("ray").submodule_search_locations
    return json.loads((Path(ray_dir) / "autoscaler" / "ray-schema.json").read_text())


# -- AWS: cluster/aws.yaml --------------------------------------------------------------------
def test_aws_yaml_validates_against_rays_schema_and_launcher_preparation():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(CLUSTER / "aws.yaml")
    jsonschema.validate(config, ray_schema())
    # What `ray up` does with the file before it contacts AWS: merge the provider's
    # defaults and the setup commands, check docker and worker counts, validate again.
    validate_config(prepare_config(copy.deepcopy(config)))


def test_aws_head_runs_only_drivers_and_workers_are_spot_from_zero():
    config = load(CLUSTER / "aws.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["CPU"] == 0  # `num-cpus 0`: no task or Train worker on the head
    assert head["resources"]["on_demand"] >= 1  # what drivers request
    assert "InstanceMarketOptions" not in head["node_config"]  # on-demand
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert {"cpu_spot", "gpu_spot"} <= set(workers)
    for name, node_type in workers.items():
        assert node_type["min_workers"] == 0, name
        assert node_type["max_workers"] >= 1, name
        assert node_type["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot", name
        assert "on_demand" not in node_type["resources"], name
    for node_type in types.values():
        assert "Name" in node_type["node_config"]["IamInstanceProfile"]
    assert config["idle_timeout_minutes"] > 0
    assert config["provider"]["cache_stopped_nodes"] is False
    # No public dashboard: no extra inbound rules, dashboard bound to the head's loopback.
    assert not config["provider"]["security_group"].get("IpPermissions")
    [start] = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in start and "RAY_AUTH_MODE=token" in start
    [start] = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    assert "RAY_AUTH_MODE=token" in start
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert ".rayignore" in config["rsync_filter"]


def run_readme_iam_commands(iam) -> None:
    """The `aws iam` commands of cluster/README.md, through boto3: its heredoc files for
    `file://` arguments, its `for role in ...` loop expanded."""
    text = README.read_text()
    files = {path: json.loads(body) for path, body in
             re.findall(r"cat > (\S+) <<'EOF'\n(.*?)\nEOF", text, re.DOTALL)}
    [roles] = re.findall(r"for role in ([^;]+); do", text)
    commands = readme_commands("aws")
    assert commands
    for tokens in commands:
        assert tokens[1] == "iam", tokens
        for role in roles.split() if "$role" in tokens else [None]:
            args = [t.replace("$role", role) if role else t for t in tokens[3:]]
            params = {}
            for flag, value in zip(args[::2], args[1::2]):
                name = "".join(w.capitalize() for w in flag.removeprefix("--").split("-"))
                if value.startswith("file://"):
                    value = json.dumps(files[value.removeprefix("file://")])
                params[name] = value
            managed = params.get("PolicyArn", "").partition("arn:aws:iam::aws:policy/")[2]
            if managed:  # an AWS managed policy: known to moto, not loaded (that takes seconds)
                from moto.iam.aws_managed_policies import aws_managed_policies_data

                assert managed in json.loads(aws_managed_policies_data), params["PolicyArn"]
                iam.get_role(RoleName=params["RoleName"])
                continue
            getattr(iam, tokens[2].replace("-", "_"))(**params)


def test_aws_bootstrap_and_spot_launch_on_a_mocked_account(tmp_path, monkeypatch):
    """The launcher's own AWS code on moto, after the README's IAM commands: IAM, key pair,
    subnets, security group, then one node of each type launched as the autoscaler does."""
    moto = pytest.importorskip("moto")
    import boto3
    from ray.autoscaler._private.aws.config import bootstrap_aws
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
    from ray.autoscaler._private.util import prepare_config

    monkeypatch.setenv("HOME", str(tmp_path))  # the launcher writes its key pair to ~/.ssh
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    config = prepare_config(load(CLUSTER / "aws.yaml"))
    region = config["provider"]["region"]
    with moto.mock_aws():
        run_readme_iam_commands(boto3.client("iam", region_name=region))
        ready = bootstrap_aws(copy.deepcopy(config))

        ec2 = boto3.client("ec2", region_name=region)
        [group] = ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": ["diet-ray-ssh-only"]}])["SecurityGroups"]
        public = [rule for rule in group["IpPermissions"] if rule["IpRanges"]]
        assert [(r["FromPort"], r["ToPort"]) for r in public] == [(22, 22)]  # SSH only
        provider = AWSNodeProvider(ready["provider"], ready["cluster_name"])
        for name, node_type in ready["available_node_types"].items():
            assert node_type["node_config"]["SecurityGroupIds"] == [group["GroupId"]]
            provider.create_node(node_type["node_config"],
                                 {"ray-node-type": "worker", "ray-user-node-type": name,
                                  "ray-node-name": name}, 1)
        launched = {i["InstanceType"]: i for r in ec2.describe_instances()["Reservations"]
                    for i in r["Instances"]}
    types = config["available_node_types"]
    for name, node_type in types.items():
        instance = launched[node_type["node_config"]["InstanceType"]]
        spot = name != config["head_node_type"]
        assert (instance.get("InstanceLifecycle") == "spot") == spot, name
        profile = node_type["node_config"]["IamInstanceProfile"]["Name"]
        assert instance["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{profile}")


# -- KubeRay: cluster/kuberay/ ----------------------------------------------------------------
def raycluster() -> tuple[dict, dict]:
    docs = load_all(KUBERAY / "raycluster.yaml")
    assert [d["kind"] for d in docs] == ["ServiceAccount", "RayCluster"]
    return docs[0], docs[1]


def rayjobs() -> dict[str, dict]:
    jobs = {}
    for path in sorted(KUBERAY.glob("rayjob-*.yaml")):
        [doc] = load_all(path)
        jobs[path.name] = doc
    assert set(jobs) == {"rayjob-distill.yaml", "rayjob-evaluate.yaml"}
    return jobs


def pod_specs(cluster_spec: dict) -> list[dict]:
    return [cluster_spec["headGroupSpec"]["template"]["spec"],
            *(g["template"]["spec"] for g in cluster_spec["workerGroupSpecs"])]


def test_kuberay_raycluster_autoscales_from_zero_with_a_cpu_less_head():
    account, cluster = raycluster()
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert json.loads(json.loads(head["rayStartParams"]["resources"])) == {"on_demand": 4}
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress")
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for group in groups.values():
        assert group["minReplicas"] == 0 and group.get("replicas", 0) == 0
        assert group["maxReplicas"] >= 1
    [gpu] = groups["gpu"]["template"]["spec"]["containers"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # Every pod: the S3 service account, requests equal to limits, the same Ray version.
    assert account["apiVersion"] == "v1"
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]
    for pod in pod_specs(spec):
        assert pod["serviceAccountName"] == account["metadata"]["name"]
        for container in pod["containers"]:
            assert container["resources"]["requests"] == container["resources"]["limits"]
            assert f"ray{spec['rayVersion']}-" in container["image"]


def test_kuberay_rayjobs_embed_the_raycluster_and_clean_up_after_themselves():
    _account, cluster = raycluster()
    for name, job in rayjobs().items():
        assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob"), name
        spec = job["spec"]
        assert spec["rayClusterSpec"] == cluster["spec"], f"{name} drifted from raycluster.yaml"
        assert spec["shutdownAfterJobFinishes"] is True, name
        assert spec["ttlSecondsAfterFinished"] > 0, name
        assert spec["activeDeadlineSeconds"] > 0, name
        assert spec["submitterConfig"]["backoffLimit"] >= 1, name
        assert json.loads(spec["entrypointResources"]) == {"on_demand": 1}, name
        assert "working_dir" not in yaml.safe_load(spec["runtimeEnvYAML"]), name


def subparser(command: str) -> argparse.ArgumentParser:
    [choices] = [a.choices for a in build_parser()._actions
                 if isinstance(a, argparse._SubParsersAction)]
    return choices[command]


def check_job_entrypoint(tokens: list[str]) -> None:
    """`python jobs/<name>.py --flag ...`: an existing entry point that dispatches to the
    `diet-ray <name>` command, and only flags that command accepts."""
    assert tokens[0] == "python", tokens
    script = REPO / tokens[1]
    assert script.is_file() and script.parent == REPO / "jobs", tokens[1]
    command = script.stem
    assert f'main(["{command}"' in script.read_text(), f"{tokens[1]} is not `diet-ray {command}`"
    accepted = {o for a in subparser(command)._actions for o in a.option_strings}
    flags = {t.split("=")[0] for t in tokens[2:] if t.startswith("-")}
    assert flags <= accepted, f"{tokens[1]}: unknown flags {sorted(flags - accepted)}"
    try:
        build_parser().parse_args([command, *tokens[2:]])
    except SystemExit:
        pytest.fail(f"`diet-ray {command}` rejects: {shlex.join(tokens[2:])}")


@pytest.mark.parametrize("name", ["rayjob-distill.yaml", "rayjob-evaluate.yaml"])
def test_rayjob_entrypoint_is_an_existing_job_with_accepted_flags(name):
    check_job_entrypoint(shlex.split(rayjobs()[name]["spec"]["entrypoint"]))


# -- cluster/README.md ------------------------------------------------------------------------
def readme_commands(program: str) -> list[list[str]]:
    """Every `program ...` command in the README's bash blocks (continuations joined,
    comments and leading VAR=value assignments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            if not re.match(rf"\s*(\w+=\S+\s+)*{re.escape(program)}\s", line):
                continue
            tokens = shlex.split(line, comments=True)
            while "=" in tokens[0]:
                tokens.pop(0)
            commands.append(tokens)
    return commands


def test_readme_ray_commands_parse_with_the_installed_ray_cli(monkeypatch):
    import click
    from ray.scripts.scripts import cli

    monkeypatch.chdir(REPO)  # the README runs everything from the repository root
    commands = readme_commands("ray")
    used = {" ".join(t[:3] if t[1] == "job" else t[:2]) for t in commands}
    assert {"ray up", "ray dashboard", "ray down", "ray job submit", "ray job logs",
            "ray job status", "ray get-auth-token"} <= used, used
    for tokens in commands:
        command, path, args = cli, ["ray"], tokens[1:]
        while isinstance(command, click.Group) and args and args[0] in command.commands:
            command = command.commands[args[0]]
            path.append(args.pop(0))
        assert not isinstance(command, click.Group), f"not a ray command: {shlex.join(tokens)}"
        try:
            context = command.make_context(" ".join(path), list(args))
        except click.ClickException as e:
            pytest.fail(f"{shlex.join(tokens)}: {e.format_message()}")
        entrypoint = list(context.params.get("entrypoint") or ())
        if entrypoint[:1] == ["python"]:
            check_job_entrypoint(entrypoint)


def test_readme_diet_ray_commands_parse():
    commands = readme_commands("diet-ray")
    assert commands
    for tokens in commands:
        try:
            build_parser().parse_args(tokens[1:])
        except SystemExit:
            pytest.fail(f"diet-ray rejects: {shlex.join(tokens)}")


# -- versions and secrets ---------------------------------------------------------------------
def cluster_files() -> list[Path]:
    return sorted(p for p in CLUSTER.rglob("*") if p.is_file())


def test_every_cluster_file_pins_the_same_ray_torch_and_python():
    text = "\n".join(p.read_text() for p in cluster_files())
    rays = set(re.findall(r"rayproject/ray:(\d+\.\d+\.\d+)-py", text)
               + re.findall(r"ray\[[a-z,]+\]==(\d+\.\d+\.\d+)", text)
               + re.findall(r'rayVersion: "(\d+\.\d+\.\d+)"', text)
               + re.findall(r"-ray(\d+\.\d+\.\d+)-py", text))
    pythons = set(re.findall(r"-(py3\d+)-", text))
    torches = set(re.findall(r"torch==(\d+\.\d+\.\d+)", text)
                  + re.findall(r"TORCH_VERSION=(\d+\.\d+\.\d+)", text))
    assert len(rays) == 1 and len(pythons) == 1 and len(torches) == 1, (rays, pythons, torches)
    assert torches == set(re.findall(r"torch==(\d+\.\d+\.\d+)", (REPO / "README.md").read_text()))


SECRET_PATTERNS = {
    "AWS access key id": r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b",
    "AWS key or token assignment": r"(?i)aws_?(?:secret_?access_?key|access_?key_?id|"
                                   r"session_?token)\s*[:=]",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "40-character secret": r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])",
    "account id in an ARN": r"arn:aws:[a-z0-9-]*:[a-z0-9-]*:\d{12}:",
    "Ray token": r"\b[0-9a-f]{64}\b",
}


@pytest.mark.parametrize("path", [*cluster_files(), REPO / ".rayignore"],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_no_secrets(path):
    text = path.read_text()
    for what, pattern in SECRET_PATTERNS.items():
        assert not re.search(pattern, text), f"{path.relative_to(REPO)}: looks like a {what}"


# -- what a job uploads -----------------------------------------------------------------------
def test_rayignore_keeps_data_outputs_envs_caches_and_keys_out_of_a_job(tmp_path):
    """Ray's own packaging of a working dir, with .rayignore as the only exclusion list (no
    .gitignore, none of Ray's default excludes), on a tree shaped like a used checkout."""
    from ray._private.runtime_env.packaging import create_package

    kept = ["jobs/distill.py", "jobs/configs/movielens.yaml", "diet_ray/data/schema.py",
            "diet_ray/memory/store.py", "cluster/runtime_env.yaml", "pyproject.toml"]
    left_out = ["runs/distill-0.02/config.json", "runs/distill-0.02/snapshots/stage=0000/x",
                ".venv/bin/python", "venv/lib/site.py", ".git/HEAD", "data/raw/u.data",
                "out/x.json", "diet_ray/__pycache__/cli.cpython-311.pyc",
                ".pytest_cache/v/cache", ".ruff_cache/x", "diet_ray.egg-info/PKG-INFO",
                "prepared/stage=0000/part-0.parquet", ".env", "id_rsa.pem", ".aws/credentials"]
    for rel in kept + left_out:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / ".rayignore").write_text((REPO / ".rayignore").read_text())
    package = tmp_path.parent / f"{tmp_path.name}.zip"
    create_package(str(tmp_path), package, include_gitignore=False)
    names = set(zipfile.ZipFile(package).namelist())
    assert set(kept) <= names, sorted(set(kept) - names)
    assert not names & set(left_out), sorted(names & set(left_out))
