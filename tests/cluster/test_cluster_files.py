"""cluster.yaml, cluster/local.yaml and the KubeRay manifests: valid, and naming the same node types and resources."""

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from cluster.job_submission import job_names

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
TIER_RESOURCE = {"edge_cpu": "edge", "cloud_gpu": "cloud"}


def load(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


@pytest.mark.parametrize("path", ["cluster.yaml", "cluster/local.yaml"])
def test_launcher_configs_follow_rays_schema_and_name_both_tiers(path):
    config = load(path)
    jsonschema.validate(config, SCHEMA)
    types = config["available_node_types"]
    assert set(types) == {config["head_node_type"], "edge_cpu", "cloud_gpu"}
    for node_type, resource in TIER_RESOURCE.items():
        assert types[node_type]["resources"][resource] == 1
        assert types[node_type]["min_workers"] <= types[node_type]["max_workers"]
    assert config["idle_timeout_minutes"] > 0


def test_cluster_yaml_gives_the_cloud_tier_gpus_and_installs_the_project():
    config = load("cluster.yaml")
    assert config["available_node_types"]["cloud_gpu"]["resources"]["GPU"] >= 1
    assert config["available_node_types"]["head"]["resources"]["CPU"] == 0
    assert any("make install" in command for command in config["setup_commands"])


def test_serve_tiers_ask_for_what_the_node_types_offer():
    from cluster.serve_config import read_deploy_file

    _, serve = read_deploy_file(ROOT / "cluster" / "serve.yaml")
    types = load("cluster.yaml")["available_node_types"]
    for tier, node_type in (("edge", "edge_cpu"), ("cloud", "cloud_gpu")):
        offered = types[node_type]["resources"]
        asked = {"CPU": serve.tiers[tier].num_cpus, "GPU": serve.tiers[tier].num_gpus, **serve.tiers[tier].resources}
        assert all(offered.get(k, 0) >= v for k, v in asked.items() if v), (tier, asked, offered)


def _groups(cluster_spec: dict) -> dict:
    return {g["groupName"]: g for g in cluster_spec["workerGroupSpecs"]}


def test_kuberay_raycluster_mirrors_cluster_yaml():
    manifest = load("cluster/kuberay/raycluster.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    spec = manifest["spec"]
    assert spec["enableInTreeAutoscaling"] is True and spec["rayVersion"] == ray.__version__
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    types = load("cluster.yaml")["available_node_types"]
    groups = _groups(spec)
    assert set(groups) == {"edge-cpu", "cloud-gpu"}
    for node_type, resource in TIER_RESOURCE.items():
        group = groups[node_type.replace("_", "-")]
        assert json.loads(json.loads(group["rayStartParams"]["resources"])) == {resource: 1}
        assert (group["minReplicas"], group["maxReplicas"]) == (types[node_type]["min_workers"],
                                                                types[node_type]["max_workers"])
        assert group["template"]["spec"]["containers"][0]["image"]
    gpu = groups["cloud-gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == types["cloud_gpu"]["resources"]["GPU"]


def test_kuberay_rayservice_serves_cluster_serve_yaml_on_the_same_cluster():
    manifest = load("cluster/kuberay/rayservice.yaml")
    assert manifest["kind"] == "RayService"
    assert yaml.safe_load(manifest["spec"]["serveConfigV2"]) == load("cluster/serve.yaml")
    assert manifest["spec"]["rayClusterConfig"] == load("cluster/kuberay/raycluster.yaml")["spec"]


def test_kuberay_serving_gets_its_token_from_a_secret_in_every_container():
    from cluster.serve_config import AuthConfig

    spec = load("cluster/kuberay/rayservice.yaml")["spec"]["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            token = env[AuthConfig().token_env]
            assert token["valueFrom"]["secretKeyRef"] == {"name": "vidgen-serve-token", "key": "token"}
            assert "value" not in token  # never the token itself


def test_kuberay_rayjob_runs_a_vidgen_job_on_the_cluster():
    manifest = load("cluster/kuberay/rayjob.yaml")
    assert manifest["kind"] == "RayJob"
    assert manifest["spec"]["clusterSelector"]["ray.io/cluster"] == load("cluster/kuberay/raycluster.yaml")[
        "metadata"]["name"]
    words = manifest["spec"]["entrypoint"].split()
    assert words[:2] == ["python", "-m"] and words[2].removeprefix("jobs.") in job_names()
    assert "--config" in words and words[words.index("--address") + 1] == "auto"
    assert yaml.safe_load(manifest["spec"]["runtimeEnvYAML"])["working_dir"]


def test_cli_help_loads_no_heavy_library():
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from vidgen.cli import app\n"
        "runner = CliRunner()\n"
        "for args in ([], ['serve'], ['serve', 'up'], ['jobs'], ['jobs', 'logs'], ['submit'], ['render'],\n"
        "             ['data'], ['models'], ['train'], ['cluster'], ['cluster', 'scale']):\n"
        "    result = runner.invoke(app, [*args, '--help'])\n"
        "    assert result.exit_code == 0 and 'Usage' in result.output, (args, result.output)\n"
        "print(sorted(m for m in ('ray', 'torch', 'deepspeed') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
