"""The cloud cluster paths: cluster.yaml (Ray cluster launcher, AWS), kuberay/ (a RayJob and its image), and the
entry script submitted as a Ray Job to a real local Ray head (slow).

Each pin (Ray, Python, the image tag) is read from where it is declared (pyproject.toml, this interpreter), so a
version bump that leaves a cluster file behind fails here."""
import copy
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from test_sweep import tiny_experiment

from rft_ray.results.store import ResultStore
from rft_ray.sweep.resources import DRIVER_NODE_RESOURCE, launcher_node_types

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster.yaml"
RAYJOB = ROOT / "kuberay" / "rayjob.yaml"
DOCKERFILE = ROOT / "kuberay" / "Dockerfile"


def ray_pin() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    pins = set(re.findall(r'"ray\[[^\]]*\]==([0-9.]+)"', text))
    assert len(pins) == 1, f"pyproject.toml should pin ray once, found {pins}"
    return pins.pop()


def python_tag() -> str:
    return f"py{sys.version_info.major}{sys.version_info.minor}"


def image_tag() -> str:
    """The base of the project's image: Ray's GPU image of the pinned Ray and this Python."""
    return f"rayproject/ray:{ray_pin()}-{python_tag()}-gpu"


def project_version() -> str:
    return re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)


def project_image_tag() -> str:
    """The tag of the image kuberay/Dockerfile builds, which every node of both cluster paths runs."""
    return f"{project_version()}-ray{ray_pin()}-{python_tag()}-gpu"


def cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def rayjob() -> dict:
    docs = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d]
    assert len(docs) == 1
    return docs[0]


def dockerfile_from() -> str:
    froms = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert len(froms) == 1
    return froms[0]


# ---------------------------------------------------------------------------------------------------
# cluster.yaml


def test_cluster_yaml_runs_the_projects_image_from_the_registry_it_logs_in_to():
    docker = cluster()["docker"]
    registry, _, name_tag = docker["image"].rpartition("/")
    assert name_tag == f"rft-ray:{project_image_tag()}"
    assert docker["container_name"] == "rft" and docker["pull_before_run"] is True
    assert any("--ulimit nofile=" in opt for opt in docker["run_options"])
    # The host logs in to that registry before docker pulls (a private ECR needs it; the nodes' roles read ECR).
    login = [c for c in cluster()["initialization_commands"] if "docker login" in c]
    assert len(login) == 1 and login[0].rstrip().endswith(f"--password-stdin {registry}")
    region = re.search(r"\.ecr\.([a-z0-9-]+)\.amazonaws\.com$", registry).group(1)
    assert f"--region {region}" in login[0] and cluster()["provider"]["region"] == region
    # The Dockerfile documents the same tag.
    assert f"rft-ray:{project_image_tag()}" in DOCKERFILE.read_text()


def test_cluster_yaml_setup_installs_nothing_and_refuses_a_stale_image():
    """The image holds the project and every pinned dependency: setup only syncs code (file_mounts) and stops a
    node whose pyproject.toml differs from the one the image was built with."""
    config = cluster()
    every = [*config["setup_commands"], *config["head_setup_commands"], *config["worker_setup_commands"]]
    for node_type in config["available_node_types"].values():
        every += node_type.get("worker_setup_commands", [])
    assert not [c for c in every if "pip" in c or re.search(r"\bpython3\b", c)]
    kept = re.search(r"cp /home/ray/rft-ray/pyproject\.toml (\S+)", DOCKERFILE.read_text()).group(1)
    guard = [c for c in config["setup_commands"] if "cmp -s" in c]
    assert len(guard) == 1 and f"~/rft-ray/pyproject.toml {kept} ||" in guard[0] and "exit 1" in guard[0]
    assert any(f"ray.__version__ == '{ray_pin()}'" in c for c in config["setup_commands"])
    # The project lands where the image installed it and where launch.py looks for specs (RFT_REPO's default).
    assert config["file_mounts"] == {"~/rft-ray": "."}
    assert '"~/rft-ray"' in (ROOT / "experiments" / "launch.py").read_text()
    assert re.search(r"-e /home/ray/rft-ray\b", DOCKERFILE.read_text())


def test_cluster_yaml_names_the_bucket_once_and_gpu_workers_can_use_it():
    config = cluster()
    text = CLUSTER.read_text()
    envs = [o for o in config["docker"]["run_options"] if o.startswith("--env RFT_BUCKET=")]
    assert len(envs) == 1
    bucket = envs[0].split("=", 1)[1]
    assert text.count(bucket) == 1  # the one place; everything else says $RFT_BUCKET
    for name in ("paper", "domainnet_ood"):
        spec = yaml.safe_load((ROOT / "experiments" / f"{name}.yaml").read_text())
        assert spec["storage"]["path"] == f"s3://${{RFT_BUCKET}}/{name}"
        assert bucket not in (ROOT / "experiments" / f"{name}.yaml").read_text()
    head = config["head_node_type"]
    for name, node_type in config["available_node_types"].items():
        # Ray attaches its default profile to the head only: every type names its own.
        assert node_type["node_config"]["IamInstanceProfile"]["Name"] == ("rft-ray-head" if name == head
                                                                          else "rft-ray-worker")
        if name == head:
            continue
        sync = [c for c in node_type["worker_setup_commands"] if "aws s3 sync" in c]
        assert len(sync) == 1 and "s3://${RFT_BUCKET:?" in sync[0] and "/home/ubuntu/data" in sync[0]
        assert "||" not in sync[0] and "echo" not in sync[0]  # a failed sync fails the node's setup
    # The policies those roles need are written where the README's walk-through sends the user.
    guide = (ROOT / "docs" / "guides" / "aws.md").read_text()
    for needed in ("rft-ray-head", "rft-ray-worker", "iam:PassRole", "s3:PutObject", "s3:DeleteObject",
                   "s3:ListBucket", "AmazonEC2ContainerRegistryReadOnly"):
        assert needed in guide, needed


def test_a_storage_path_with_an_unset_variable_names_the_field_and_the_variable(monkeypatch):
    from rft_ray.config import SpecError
    from rft_ray.specs import load_experiment

    monkeypatch.setenv("RFT_BUCKET", "team-bucket")
    assert load_experiment(str(ROOT / "experiments" / "paper.yaml")).storage_root == "s3://team-bucket/paper"
    monkeypatch.delenv("RFT_BUCKET")
    experiment = load_experiment(str(ROOT / "experiments" / "paper.yaml"))
    with pytest.raises(SpecError, match=r"storage\.path: .*\$\{RFT_BUCKET\}, which is not set.*--set storage\.path="):
        experiment.storage_root


def test_cluster_yaml_node_types_have_an_ami_the_driver_resource_and_gpus():
    config = cluster()
    types = config["available_node_types"]
    for name, node_type in types.items():
        assert re.fullmatch(r"ami-[0-9a-f]{8,17}", node_type["node_config"].get("ImageId", "")), name
    assert len({t["node_config"]["ImageId"] for t in types.values()}) == 1
    head = types[config["head_node_type"]]
    assert head["resources"].get(DRIVER_NODE_RESOURCE, 0) >= 1
    assert not head["resources"].get("GPU")  # trials never land on the head
    workers = {n: t for n, t in types.items() if n != config["head_node_type"]}
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1 and t["resources"].get("CPU", 0) >= 1]
    assert gpu and all(t["min_workers"] == 0 for t in gpu)
    # What the sweep's `auto` resources read from the launcher config before any GPU node exists.
    offers = launcher_node_types(CLUSTER)
    assert [(o.cpus, o.gpus, o.count) for o in offers] == [(4.0, 1.0, 8)]  # gpu_4x_a10g: at max_workers 0


def test_cluster_yaml_has_a_4_gpu_node_type_that_holds_one_trial_of_the_vit_large_spec(tmp_path):
    """gpu_4x_a10g (g5.12xlarge: 4 x A10G, 48 vCPU), off until raised: as shipped the ViT-L spec's trials fit no
    node type (a clear error); raised to 2 it holds one trial per node (4 workers x 10 CPU and 1 GPU), two at a
    time."""
    from rft_ray.specs import load_experiment
    from rft_ray.sweep.resources import plan_resources
    from rft_ray.sweep.state import SweepError

    config = cluster()
    four = config["available_node_types"]["gpu_4x_a10g"]
    assert four["node_config"]["InstanceType"] == "g5.12xlarge"
    assert four["resources"] == {"CPU": 48, "GPU": 4} and (four["min_workers"], four["max_workers"]) == (0, 0)
    assert four["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}
    assert "experiments/vit_large.yaml" in CLUSTER.read_text()
    spec = load_experiment(str(ROOT / "experiments" / "vit_large.yaml"), {"resources.max_concurrent_trials": "auto"})
    with pytest.raises(SweepError, match=r"each asks for 40 CPU and 4 GPU \(4 worker"):
        plan_resources(spec, [], launcher_node_types(CLUSTER))
    config["available_node_types"]["gpu_4x_a10g"]["max_workers"] = 2
    raised = tmp_path / "cluster.yaml"
    raised.write_text(yaml.safe_dump(config, sort_keys=False))
    offers = launcher_node_types(raised)
    assert [(o.cpus, o.gpus, o.count) for o in offers] == [(4.0, 1.0, 8), (48.0, 4.0, 2)]
    plan = plan_resources(spec, [], offers)
    assert (plan["workers_per_trial"], plan["gpus_per_trial"], plan["cpus_per_trial"]) == (4, 1.0, 10.0)
    assert plan["max_concurrent_trials"] == 2  # one per 4-GPU node; the 1-GPU nodes hold none


def test_cluster_yaml_with_docker_passes_rays_schema_and_config_checks():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = cluster()
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["docker"]["image"] == config["docker"]["image"]  # not replaced by the launcher's defaults
    bad = copy.deepcopy(config)
    bad["docker"]["shm_size"] = "8g"  # not a key Ray knows: the schema must catch typos in this section too
    with pytest.raises(jsonschema.ValidationError, match="'shm_size' was unexpected"):
        jsonschema.validate(bad, schema)


# ---------------------------------------------------------------------------------------------------
# kuberay/


def test_rayjob_runs_the_launch_script_on_a_spec_the_image_has():
    job = rayjob()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    python, script, spec_arg, *_ = spec["entrypoint"].split()
    env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    repo = env["RFT_REPO"]
    assert python == "python" and script == f"{repo}/experiments/launch.py"
    assert (ROOT / spec_arg).is_file() and spec_arg.startswith("experiments/")
    # The image holds the project where RFT_REPO says (so the relative spec resolves), and the launcher config
    # `auto` reads is in it.
    docker = DOCKERFILE.read_text()
    assert re.search(rf"^WORKDIR {re.escape(repo)}$", docker, flags=re.MULTILINE)
    assert re.search(rf"python -m pip install .*-e {re.escape(repo)}\b", docker)
    assert env["RFT_CLUSTER_CONFIG"] == f"{repo}/cluster.yaml"
    assert re.search(r"^COPY .*\bcluster\.yaml\b", docker, re.MULTILINE)


def test_rayjob_cluster_matches_the_pins_and_the_launcher_config():
    cluster_spec = rayjob()["spec"]["rayClusterSpec"]
    assert cluster_spec["rayVersion"] == ray_pin() and cluster_spec["enableInTreeAutoscaling"] is True
    head = cluster_spec["headGroupSpec"]
    params = head["rayStartParams"]
    assert params["num-cpus"] == "0"
    # KubeRay's form: a JSON object inside a quoted string.
    assert json.loads(json.loads(params["resources"])).get(DRIVER_NODE_RESOURCE, 0) >= 1
    images = {c["image"] for c in head["template"]["spec"]["containers"]}
    groups = cluster_spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        images |= {c["image"] for c in group["template"]["spec"]["containers"]}
    assert len(images) == 1, images
    gpu_groups = []
    for group in groups:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        if int(limits.get("nvidia.com/gpu", 0)) >= 1:
            gpu_groups.append((float(limits["cpu"]), float(limits["nvidia.com/gpu"]), group["maxReplicas"]))
            assert group["minReplicas"] == 0
    # The worker group is what RFT_CLUSTER_CONFIG (cluster.yaml's GPU node type) tells `auto` it is.
    assert gpu_groups == [(o.cpus, o.gpus, o.count) for o in launcher_node_types(CLUSTER)]


CRD_FIXTURE = ROOT / "tests" / "fixtures" / "kuberay-v1.7.0-rayjob-crd.json"


def strict(schema):
    """The CRD's schema as `kubectl apply`'s strict field validation reads it: an object with declared properties
    takes no others (Kubernetes prunes or refuses unknown fields; plain JSON Schema would let a typo through)."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def test_rayjob_is_valid_against_kuberays_crd_schema():
    import jsonschema

    fixture = json.loads(CRD_FIXTURE.read_text())
    assert (fixture["tag"], fixture["crd"], fixture["version"]) == ("v1.7.0", "rayjobs.ray.io", "v1")
    # OpenAPI v3's schema dialect is JSON Schema draft 4's (Kubernetes' structural schemas).
    validator = jsonschema.Draft4Validator(strict(fixture["openAPIV3Schema"]))
    validator.validate(rayjob())
    bad = copy.deepcopy(rayjob())
    bad["spec"]["ttlSecondsAfterFinish"] = 60  # a typo of ttlSecondsAfterFinished
    with pytest.raises(jsonschema.ValidationError, match="ttlSecondsAfterFinish"):
        validator.validate(bad)
    bad = copy.deepcopy(rayjob())
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["initContainers"][0]["volumeMounts"] = "x"
    with pytest.raises(jsonschema.ValidationError, match="'x' is not of type 'array'"):
        validator.validate(bad)


def test_rayjob_keeps_its_cluster_a_while_pins_the_head_and_gets_its_data():
    job = rayjob()
    spec = job["spec"]
    assert spec["ttlSecondsAfterFinished"] >= 600  # KubeRay's default 0 deletes a failed job's logs at once
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["nodeSelector"] == {"eks.amazonaws.com/capacityType": "ON_DEMAND"}
    terms = head["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"} in terms[0]["matchExpressions"]
    env = {e["name"]: e["value"] for e in head["containers"][0]["env"]}
    bucket = env["RFT_BUCKET"]
    assert RAYJOB.read_text().count(bucket) == 1  # named once; the workers reuse the head's env list
    # Every node-local dataset of the spec the job runs lies under the folder the init container fills.
    from rft_ray.specs import load_experiment

    spec_arg = spec["entrypoint"].split()[2]
    experiment = load_experiment(str(ROOT / spec_arg))
    roots = {g.run["dataset"]["root"] for g in experiment.groups if g.run["dataset"].get("node_local")}
    assert roots
    for group in spec["rayClusterSpec"]["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        assert pod["serviceAccountName"] == head["serviceAccountName"] == "rft-ray"
        (init,) = pod["initContainers"]
        assert init["image"] == pod["containers"][0]["image"]  # the image has the AWS CLI
        assert {e["name"]: e["value"] for e in init["env"]} == env == {
            e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        script = init["command"][-1]
        assert "aws s3 sync" in script and '"s3://${RFT_BUCKET:?}/data"' in script and "||" not in script
        target = script.split()[-1]
        mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
        worker_mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts[target] == worker_mounts[target] and all(r.startswith(target + "/") for r in roots)
        assert mounts[target] in {v["name"] for v in pod["volumes"]}
    assert "awscli==" in DOCKERFILE.read_text()


def test_dockerignore_keeps_the_venv_data_and_stores_out_of_the_build_context():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for needed in (".venv", ".git", "data", "results", "**/*.db", "mlruns", "**/__pycache__"):
        assert needed in ignored, needed
    # Nothing the Dockerfile copies is ignored.
    copied = re.findall(r"^COPY --chown=\S+ (.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    for source in " ".join(copied).split():
        assert source not in ignored and (ROOT / source).exists(), source


def test_one_image_for_the_launcher_and_kuberay():
    assert dockerfile_from() == image_tag()
    images = {cluster()["docker"]["image"]}
    spec = rayjob()["spec"]["rayClusterSpec"]
    for template in [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]:
        images |= {c["image"] for c in template["spec"]["containers"]}
    assert len(images) == 1, images


# ---------------------------------------------------------------------------------------------------
# `ray job submit` with the entry script, on a real local Ray head with its dashboard (Ray Jobs' server)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_processes(temp_dir: str):
    """The processes of the Ray head started with `temp_dir` (its daemons name it in their command lines) and all
    their descendants (workers, the job's driver): this test's cluster only, not any other Ray on the machine."""
    import psutil

    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in arg for arg in proc.info["cmdline"] or []):
                roots.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found = {p.pid: p for p in roots}
    for proc in roots:
        try:
            found.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.NoSuchProcess:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def stop_session(temp_dir: str) -> None:
    import psutil

    procs = session_processes(temp_dir)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


@pytest.mark.slow
def test_ray_job_submit_runs_the_launch_script(tmp_path):
    from ray._private.utils import get_dashboard_dependency_error
    from ray.job_submission import JobStatus, JobSubmissionClient

    # pyproject depends on ray[default] for this: the Jobs API needs the dashboard
    assert get_dashboard_dependency_error() is None, get_dashboard_dependency_error()
    # A project copy as on a cluster node: the spec is given relative to RFT_REPO, as kuberay/rayjob.yaml does.
    repo = tmp_path / "repo"
    (repo / "experiments").mkdir(parents=True)
    data = tiny_experiment(tmp_path / "sweep", resources={"cpus_per_trial": 1, "gpus_per_trial": 0,
                                                          "max_concurrent_trials": 1})
    data["search"]["num_samples"] = 1
    data["base"]["training"]["steps"] = 20
    (repo / "experiments" / "tiny.yaml").write_text(yaml.safe_dump(data))

    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # Unix socket paths under it must stay short
    dashboard = free_port()
    bin_dir = str(Path(sys.executable).parent)
    # `python` in the job is the interpreter Ray runs with (the image's on a cluster, this venv's here).
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    # Ray 2.60 turns token auth on when ~/.ray/auth_token exists (a local ray.init writes one): give this head
    # its own token, which its processes (the job's driver included) inherit and the client sends.
    token = secrets.token_hex(32)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    start = [str(Path(bin_dir) / "ray"), "start", "--head", "--num-cpus", "2", "--port", str(free_port()),
             "--dashboard-port", str(dashboard), "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
             "--dashboard-agent-listen-port", str(free_port()),  # its default, 52365, may be another Ray's
             "--object-store-memory", str(200 * 1024**2), "--temp-dir", temp_dir, "--disable-usage-stats",
             "--resources", json.dumps({DRIVER_NODE_RESOURCE: 1000})]  # the head of cluster.yaml / rayjob.yaml
    try:
        started = subprocess.run(start, check=False, env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        client = JobSubmissionClient(f"http://127.0.0.1:{dashboard}", headers={"Authorization": f"Bearer {token}"})
        job = client.submit_job(entrypoint=f"python {ROOT / 'experiments' / 'launch.py'} experiments/tiny.yaml",
                                runtime_env={"env_vars": {"RFT_REPO": str(repo), "PYTHONUNBUFFERED": "1"}})
        deadline = time.monotonic() + 480
        while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                               JobStatus.STOPPED}:
            assert time.monotonic() < deadline, f"job still {status}:\n{client.get_job_logs(job)[-3000:]}"
            time.sleep(3)
        logs = client.get_job_logs(job)
        assert status == JobStatus.SUCCEEDED, logs[-5000:]
        assert f"rft sweep tiny: summary (store {(tmp_path / 'sweep').resolve()}/store)" in logs
        assert re.search(r"rft sweep tiny: done in \d+ s", logs)
        rows = ResultStore(str(tmp_path / "sweep" / "store")).read().to_pylist()
        assert sorted(r["step"] for r in rows) == [0, 20] and len({r["run_id"] for r in rows}) == 1
    finally:
        stop_session(temp_dir)
    assert not session_processes(temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)
