"""Issue 29, item 2: the shipped serve and cluster configs are addressable by name from any working directory (they
are package data), and a config that is neither a file nor a shipped name is refused with a hint naming files that
exist."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.launcher import read_config
from cluster.serve_config import SHIPPED_DEPLOY_FILES, read_deploy_file
from vidgen.cli import app

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(SHIPPED_DEPLOY_FILES))
def test_a_shipped_serve_config_is_found_by_name_from_another_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    deploy, cfg = read_deploy_file(name)
    _, from_repo = read_deploy_file(REPO / "cluster" / SHIPPED_DEPLOY_FILES[name])
    assert cfg == from_repo and set(cfg.tiers) == {"edge", "cloud"}


def test_the_local_cluster_config_is_found_by_name_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert read_config("local")["provider"]["type"] == "fake_multinode"


def test_an_unknown_config_names_the_shipped_ones_and_a_file_that_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as refused:
        read_deploy_file("cluster/serve-local.yaml")
    message = str(refused.value)
    assert "local, cluster, diffusers" in message and "--config local" in message
    named = re.findall(r"(?<= )(/\S+\.yaml)", message)
    assert named and all(Path(p).is_file() for p in named)
    with pytest.raises(FileNotFoundError, match="shipped config \\(local\\); pass --config local"):
        read_config("cluster/local.yaml")


def test_serve_up_refuses_an_unknown_config_in_one_line_before_starting_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", "up", "--config", "nowhere.yaml"])
    assert result.exit_code == 1 and result.output.startswith("error: serve config nowhere.yaml is neither")
