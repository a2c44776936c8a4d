"""`vidgen models import`: a diffusers folder packaged with its card and sums, pushed to a registry (a folder and
the loopback S3 server), pulled, verified and loaded; damaged registry copies refused by file name."""

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from storage.cards import parse_card
from storage.package import ModelFileError, parse_sums
from storage.registry import pull, push
from vidgen.cli import app
from vidgen.clip_request import ClipRequest, resolve_clip
from vidgen.pipelines.load import load_pipeline
from vidgen.pipelines.model_import import import_diffusers_folder


def test_import_push_pull_and_load_through_the_registry(store_root, tiny_pipelines, tmp_path):
    store, root = store_root
    package = import_diffusers_folder(tiny_pipelines["wan"], tmp_path / "pkg", licence="apache-2.0",
                                      source="examples/tiny_pipelines.py")
    meta, body = parse_card((package / "card.md").read_text())
    assert meta["library_name"] == "diffusers" and meta["pipeline_class"] == "WanPipeline"
    assert meta["license"] == "apache-2.0" and meta["lineage"]["imported_from"] == "examples/tiny_pipelines.py"
    assert meta["lineage"]["seed"] is None and {"git_commit", "command", "diffusers_version"} <= meta["lineage"].keys()
    assert meta["components"]["transformer"]["class"] == "diffusers.WanTransformer3DModel"
    assert meta["components"]["transformer"]["params"] > 1000 and "params" not in meta["components"]["tokenizer"]
    assert meta["params"] == sum(c.get("params", 0) for c in meta["components"].values())
    assert meta["capabilities"]["frames"]["multiple"] == 4 and "| vae | diffusers.AutoencoderKLWan |" in body
    sums = parse_sums((package / "SHA256SUMS").read_text(), allow_paths=True)
    assert {"model_index.json", "card.md", "vae/config.json", "transformer/diffusion_pytorch_model.safetensors",
            "tokenizer/tokenizer_config.json"} <= set(sums)

    assert push(package, f"{root}/tiny-wan", store) == "v1"
    folder = pull("tiny-wan@latest", root, store, cache_dir=tmp_path / "cache")
    pipeline = load_pipeline(folder)
    caps = pipeline.capabilities.with_defaults(steps=2, frames=5, height=16, width=16)
    clip, _ = resolve_clip(ClipRequest(prompt="a cat", seed=4), caps)
    from_registry = pipeline.generate([clip]).frames
    original = load_pipeline(tiny_pipelines["wan"]).generate([clip]).frames
    assert np.array_equal(from_registry, original)

    damaged = tmp_path / "cache" / "damaged"
    shutil.copytree(folder, damaged)
    weights = damaged / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    with pytest.raises(ModelFileError, match=r"vae/diffusion_pytorch_model.safetensors does not match"):
        load_pipeline(damaged)
    store.write(f"{root}/tiny-wan/v1/text_encoder/config.json", b"{}")  # the registry's copy changed after the push
    with pytest.raises(ModelFileError, match="text_encoder/config.json"):
        pull("tiny-wan@v1", root, store, cache_dir=tmp_path / "other-cache")


def test_the_cli_imports_lists_and_refuses_what_it_cannot_package(tiny_pipelines, tmp_path):
    runner = CliRunner()
    registry = str(tmp_path / "registry")
    result = runner.invoke(app, ["models", "import", str(tiny_pipelines["ltx"]), "tiny-ltx", "--licence", "mit",
                                 "--root", registry])
    assert result.exit_code == 0, result.output
    assert "as tiny-ltx@v1" in result.output
    assert "tiny-ltx: v1 (latest v1)" in runner.invoke(app, ["models", "list", "--root", registry]).output

    no_licence = runner.invoke(app, ["models", "import", str(tiny_pipelines["ltx"]), "x", "--root", registry])
    assert no_licence.exit_code == 1 and "pass --licence" in no_licence.output
    readme = shutil.copytree(tiny_pipelines["ltx"], tmp_path / "with-readme")
    (readme / "README.md").write_text("---\nlicense: other\n---\n# LTX\n")
    result = runner.invoke(app, ["models", "import", str(readme), "ltx-readme", "--root", registry])
    assert result.exit_code == 0, result.output
    pickled = shutil.copytree(tiny_pipelines["ltx"], tmp_path / "pickled")
    (pickled / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    refused = runner.invoke(app, ["models", "import", str(pickled), "p", "--licence", "mit", "--root", registry])
    assert refused.exit_code == 1 and "pickled weights" in refused.output
    not_a_pipeline = runner.invoke(app, ["models", "import", str(tmp_path), "q", "--licence", "mit", "--root",
                                         registry])
    assert not_a_pipeline.exit_code == 1 and "no model_index.json" in not_a_pipeline.output
