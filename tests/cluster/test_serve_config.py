"""The serve config and what is checked before a deploy, without a cluster: files, auth, limits, resources."""

import hashlib

import pytest
from ray.serve.schema import ServeDeploySchema

from cluster.api import VideoRequest, check_limits
from cluster.auth import token_digest
from cluster.deploy import DeployError, local_resources, prepare_config, unplaceable_tiers
from cluster.serve_config import AuthConfig, Limits, ServeConfig, read_deploy_file
from vidgen.clip_request import Capabilities

SHAPE = Capabilities(frames=8, height=32, width=32, steps=24, guidance=3.0)  # what a tiny model reports


@pytest.mark.parametrize("path", ["cluster/serve.yaml", "cluster/serve-local.yaml",
                                  "cluster/serve-diffusers.yaml"])
def test_shipped_files_are_serve_deploy_files_and_valid_configs(path):
    deploy, cfg = read_deploy_file(path)
    ServeDeploySchema.model_validate(deploy)
    assert set(cfg.tiers) == {"edge", "cloud"}
    assert cfg.tiers["edge"].resources == {"edge": 1}
    if path != "cluster/serve-diffusers.yaml":  # the vidgen configs serve the distilled student at the edge
        assert cfg.tiers["edge"].model == "shapes-tiny-k1" and not cfg.tiers["edge"].int8
        assert cfg.tiers["edge"].steps is None and cfg.tiers["cloud"].model == "shapes-tiny"
    assert cfg.tiers["cloud"].resources == {"cloud": 1}


def test_a_gpu_diffusers_tier_is_configuration_that_reaches_ray_and_the_pipeline():
    """No GPU here: what a GPU tier asks of Ray and of the pipeline is checked as configuration."""
    _, cfg = read_deploy_file("cluster/serve-diffusers.yaml")
    cloud = cfg.tiers["cloud"]
    assert cloud.actor_options() == {"num_cpus": 8, "num_gpus": 1, "resources": {"cloud": 1}}
    assert cloud.pipeline.dtype == "bfloat16" and cloud.pipeline.vae_tiling and not cloud.pipeline.cpu_offload
    assert (cloud.frames, cloud.height, cloud.width) == (33, 480, 832)
    assert cfg.tiers["edge"].max_batch_size == 8 and cfg.tiers["edge"].batch_wait_timeout_s == 0.05
    with pytest.raises(ValueError, match=r"max_batch_size \(8\) is above max_ongoing_requests \(4\)"):
        ServeConfig.model_validate({"tiers": {"edge": {"cost_per_clip": 1, "max_batch_size": 8},
                                              "cloud": {"cost_per_clip": 2}}})
    with pytest.raises(ValueError, match="dtype"):
        ServeConfig.model_validate({"tiers": {"edge": {"cost_per_clip": 1, "pipeline": {"dtype": "int4"}},
                                              "cloud": {"cost_per_clip": 2}}})


def test_bad_configs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="cloud missing"):
        ServeConfig.model_validate({"tiers": {"edge": {"cost_per_clip": 1}}})
    with pytest.raises(ValueError, match="above max_replicas"):
        ServeConfig.model_validate({"tiers": {"edge": {"cost_per_clip": 1, "autoscaling": {"min_replicas": 3}},
                                              "cloud": {"cost_per_clip": 2}}})
    with pytest.raises(ValueError, match="stepz"):
        ServeConfig.model_validate({"tiers": {"edge": {"cost_per_clip": 1, "stepz": 3}, "cloud": {"cost_per_clip": 2}}})
    tiers = {"edge": {"cost_per_clip": 1}, "cloud": {"cost_per_clip": 2}}
    assert ServeConfig.model_validate({"tiers": tiers}).tier_calls == "grpc"
    with pytest.raises(ValueError, match="tier_calls"):
        ServeConfig.model_validate({"tiers": tiers, "tier_calls": "http"})
    (tmp_path / "other.yaml").write_text("applications: [{name: x, import_path: other:app}]\n")
    with pytest.raises(ValueError, match="cluster.serve_app:build_app"):
        read_deploy_file(tmp_path / "other.yaml")
    with pytest.raises(FileNotFoundError, match="cluster/serve.yaml"):
        read_deploy_file(tmp_path / "missing.yaml")


def test_auth_needs_a_token_unless_insecure_on_loopback():
    _, cfg = read_deploy_file("cluster/serve-local.yaml")
    digest = hashlib.sha256(b"s3cret").hexdigest()
    assert token_digest(AuthConfig(), {"VIDGEN_SERVE_TOKEN": "s3cret"}) == digest
    assert token_digest(AuthConfig(token_sha256=digest), {}) == digest
    assert token_digest(AuthConfig(), {}, insecure_local=True) is None
    with pytest.raises(RuntimeError, match="VIDGEN_SERVE_TOKEN"):
        token_digest(AuthConfig(), {})

    shipped = prepare_config(cfg, "127.0.0.1", insecure_local=False, environ={"VIDGEN_SERVE_TOKEN": "s3cret"})
    assert shipped.auth.token_sha256 == digest and "s3cret" not in shipped.model_dump_json()
    assert shipped.renders_uri.startswith("/")  # a relative folder is resolved where the command runs
    with pytest.raises(DeployError, match="VIDGEN_SERVE_TOKEN"):
        prepare_config(cfg, "127.0.0.1", insecure_local=False, environ={})
    with pytest.raises(DeployError, match="only on loopback"):
        prepare_config(cfg, "0.0.0.0", insecure_local=True, environ={})
    assert prepare_config(cfg, "127.0.0.1", insecure_local=True, environ={}).auth.token_sha256 is None
    with pytest.raises(ValueError, match="insecure_local"):  # not something a deploy file can switch on
        ServeConfig.model_validate({**cfg.model_dump(), "auth": {"insecure_local": True}})


def test_limits_name_the_field():
    limits = Limits(max_prompt_chars=20, max_steps=8)
    ok = VideoRequest(prompt="a red square moving right"[:20], steps=8, frames=8)
    assert check_limits(ok, limits, SHAPE) == []
    bad = VideoRequest(prompt="x" * 21, steps=9, frames=16, width=64)
    assert {p.field for p in check_limits(bad, limits, SHAPE)} == {"prompt", "steps", "frames", "width"}
    with pytest.raises(ValueError, match="prompt"):  # blank once stripped
        VideoRequest(prompt="   ")
    assert [p.field for p in check_limits(VideoRequest(prompt="a", negative_prompt="a dog"), limits, SHAPE)] \
        == ["negative_prompt"]  # the served model takes none
    with pytest.raises(ValueError, match="extra"):
        VideoRequest(prompt="a", colour="red")


def test_resources_a_deploy_needs():
    _, cfg = read_deploy_file("cluster/serve.yaml")
    one_cpu_node = [{"Alive": True, "Resources": {"CPU": 16.0, "edge": 4.0}}]
    problems = unplaceable_tiers(cfg, one_cpu_node)
    assert len(problems) == 1 and "tier cloud" in problems[0] and "GPU" in problems[0]
    gpu_node = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0, "cloud": 1.0}}
    assert unplaceable_tiers(cfg, one_cpu_node + [gpu_node]) == []
    assert unplaceable_tiers(cfg, one_cpu_node + [{**gpu_node, "Alive": False}]) != []
    _, local = read_deploy_file("cluster/serve-local.yaml")
    assert local_resources(local) == {"edge": 2, "cloud": 1}
