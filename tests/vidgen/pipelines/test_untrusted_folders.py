"""Diffusers folders as untrusted input: a model_index.json naming code to import, links out of the folder, a
sharded-weights index naming a pickle, and files changed after they were verified. Each is refused by name
before anything in the folder is imported, unpickled or loaded."""

import json
import os
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file

from storage.package import ModelFileError, write_sums
from vidgen.pipelines.load import describe_model, load_pipeline
from vidgen.pipelines.model_import import import_diffusers_folder
from vidgen.pipelines.options import PipelineOptions
from vidgen.pipelines.references import verify_model

SCHEDULER = "FlowMatchEulerDiscreteScheduler"


def payload(marker) -> str:
    """A module that writes `marker` when imported, and offers the class the index names."""
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nclass {SCHEDULER}:\n    pass\n"


def naming_scheduler(folder, library: str, cls: str = SCHEDULER):
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "scheduler": [library, cls]}))
    return folder


def assert_refused_everywhere(folder, tmp_path, match: str):
    """describe, load and import all refuse the folder with `match` in the one-line error."""
    with pytest.raises(ModelFileError, match=match):
        describe_model(folder)
    with pytest.raises(ModelFileError, match=match):
        load_pipeline(folder)
    with pytest.raises(ModelFileError, match=match):
        import_diffusers_folder(folder, tmp_path / "package", licence="mit")
    assert not (tmp_path / "package").exists()


@pytest.mark.parametrize("module", ["payload", "evilpipe.scheduler.payload"])
def test_a_component_naming_a_module_in_the_folder_is_refused_without_importing_it(module, tiny_pipelines,
                                                                                   tmp_path, monkeypatch):
    folder = naming_scheduler(shutil.copytree(tiny_pipelines["wan"], tmp_path / "evilpipe"), module)
    marker = tmp_path / "payload-ran"
    for where in (folder / "payload.py", folder / "scheduler" / "payload.py"):
        where.write_text(payload(marker))
    write_sums(folder)  # listed in SHA256SUMS: the sums prove the bytes, not that they are safe
    monkeypatch.syspath_prepend(str(folder))  # as when vidgen runs from inside the folder
    monkeypatch.syspath_prepend(str(tmp_path))  # ... or from its parent (`evilpipe.scheduler.payload`)
    assert_refused_everywhere(folder, tmp_path, rf"component scheduler names the library '{module}'")
    assert not marker.exists()
    assert not {"payload", "evilpipe"} & set(sys.modules)


def test_unittest_main_is_refused_without_running_it(tiny_pipelines, tmp_path):
    folder = naming_scheduler(shutil.copytree(tiny_pipelines["wan"], tmp_path / "wan"), "unittest.__main__",
                              "TestProgram")
    assert_refused_everywhere(folder, tmp_path, r"component scheduler names the library 'unittest.__main__'")
    assert "unittest.__main__" not in sys.modules


def test_a_module_already_imported_is_no_library_either(tiny_pipelines, tmp_path):
    """diffusers itself resolves any library already in sys.modules; vidgen takes only diffusers' own table."""
    folder = naming_scheduler(shutil.copytree(tiny_pipelines["wan"], tmp_path / "wan"), "subprocess", "Popen")
    assert_refused_everywhere(folder, tmp_path, r"component scheduler names the library 'subprocess'")


def test_a_class_of_diffusers_that_is_no_component_is_refused(tiny_pipelines, tmp_path):
    folder = naming_scheduler(shutil.copytree(tiny_pipelines["wan"], tmp_path / "wan"), "diffusers",
                              "DiffusionPipeline")
    assert_refused_everywhere(folder, tmp_path, r"component scheduler: diffusers.DiffusionPipeline is not")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "ModelMixin",
                                                         "scheduler": ["diffusers", SCHEDULER]}))
    with pytest.raises(ModelFileError, match=r"_class_name 'ModelMixin' is not a pipeline"):
        describe_model(folder)


def test_a_custom_component_file_beside_a_known_library_is_refused(tiny_pipelines, tmp_path):
    """diffusers treats `scheduler/diffusers.py` as the component's own code (trust_remote_code): refused first."""
    folder = shutil.copytree(tiny_pipelines["wan"], tmp_path / "wan")
    marker = tmp_path / "payload-ran"
    (folder / "scheduler" / "diffusers.py").write_text(payload(marker))
    with pytest.raises(ModelFileError, match=r"scheduler/diffusers.py is code"):
        load_pipeline(folder)
    assert not marker.exists()


# --- links out of the folder (item 4) ---


def linked(folder, name: str, target):
    (folder / name).symlink_to(target)
    return folder


def test_import_refuses_a_link_to_a_file_outside_the_folder(tiny_pipelines, tmp_path):
    secret = tmp_path / "credentials"
    secret.write_text("AWS_SECRET_ACCESS_KEY=not-for-the-registry\n")
    for target in (secret, "/proc/self/environ"):
        folder = tmp_path / "ltx"
        shutil.rmtree(folder, ignore_errors=True)
        linked(shutil.copytree(tiny_pipelines["ltx"], folder), "tokenizer/notes.txt", target)
        with pytest.raises(ModelFileError, match=r"tokenizer/notes.txt is a link to .* outside the folder"):
            import_diffusers_folder(folder, tmp_path / "package", licence="mit")
        assert not (tmp_path / "package").exists()
        with pytest.raises(ModelFileError, match=r"tokenizer/notes.txt is a link"):
            load_pipeline(folder)


def test_import_follows_links_into_the_same_repos_hugging_face_blob_store(tiny_pipelines, tmp_path):
    """A Hugging Face cache snapshot is links into the repo's blobs/: packaged as the bytes, with no link left.
    A link into another repo's blobs is refused."""
    repo = tmp_path / "hub" / "models--org--tiny-ltx"
    snapshot = repo / "snapshots" / "0123abc"
    shutil.copytree(tiny_pipelines["ltx"], snapshot)
    (repo / "blobs").mkdir()
    for number, path in enumerate(sorted(p for p in snapshot.rglob("*") if p.is_file())):
        blob = repo / "blobs" / f"blob{number}"
        path.rename(blob)
        path.symlink_to(os.path.relpath(blob, path.parent))
    (snapshot / "vae" / "same-folder.json").symlink_to("config.json")  # a link inside the folder itself
    package = import_diffusers_folder(snapshot, tmp_path / "package", licence="mit")
    assert not any(p.is_symlink() for p in package.rglob("*"))
    assert (package / "vae" / "same-folder.json").read_bytes() == (snapshot / "vae" / "config.json").read_bytes()

    other = tmp_path / "hub" / "models--someone--else" / "blobs"
    other.mkdir(parents=True)
    (other / "blob").write_text("not this repo's")
    (snapshot / "vae" / "other.txt").symlink_to(other / "blob")
    with pytest.raises(ModelFileError, match=r"vae/other.txt is a link to .* outside the folder"):
        import_diffusers_folder(snapshot, tmp_path / "package-2", licence="mit")


# --- sharded weights naming another file (item 8) ---


def sharded_into(folder, shard: str):
    """The transformer's weights behind a sharded-weights index that names `shard`."""
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    weights.unlink()
    index = {"metadata": {"total_size": 0}, "weight_map": dict.fromkeys(state, shard)}
    (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    return state


def test_an_index_naming_a_pickle_is_refused_before_loading(tiny_pipelines, tmp_path):
    folder = shutil.copytree(tiny_pipelines["wan"], tmp_path / "wan")
    torch.save(sharded_into(folder, "weights.dat"), folder / "transformer" / "weights.dat")  # a pickle
    match = r"diffusion_pytorch_model.safetensors.index.json names the weight file 'weights.dat'"
    with pytest.raises(ModelFileError, match=match):
        load_pipeline(folder)
    write_sums(folder)
    with pytest.raises(ModelFileError, match=match):
        load_pipeline(folder)


def test_an_index_naming_a_file_outside_its_package_is_refused(tiny_pipelines, tmp_path):
    folder = shutil.copytree(tiny_pipelines["wan"], tmp_path / "wan")
    sharded_into(folder, "../vae/diffusion_pytorch_model.safetensors")
    with pytest.raises(ModelFileError, match=r"names the weight file '../vae/diffusion_pytorch_model.safetensors'"):
        describe_model(folder)


# --- loading what was verified (item 12) ---


def test_a_file_changed_after_verification_is_not_loaded(tiny_pipelines, tmp_path):
    folder = shutil.copytree(tiny_pipelines["wan"], tmp_path / "wan")
    write_sums(folder)
    verified = verify_model(folder)
    config = folder / "transformer" / "config.json"
    original = config.read_bytes()
    config.write_text(json.dumps({**json.loads(original), "num_layers": 1}))
    with pytest.raises(ModelFileError, match=r"transformer/config.json changed after it was verified"):
        describe_model(verified)
    with pytest.raises(ModelFileError, match=r"transformer/config.json changed after it was verified"):
        load_pipeline(verified)

    config.write_bytes(original)
    pipeline = load_pipeline(verified)
    loaded_from = pipeline.pipe.transformer.config._name_or_path
    assert not str(loaded_from).startswith(str(folder))  # a private copy, removed once the weights are in memory
    assert not os.path.exists(loaded_from)
    assert pipeline.pipe.transformer.config.num_layers == json.loads(original)["num_layers"]


def test_a_vidgen_package_changed_after_verification_is_not_loaded(micro_config, tmp_path):
    from storage.package import verify_folder
    from vidgen.model import VideoDiT
    from vidgen.pipelines.packages import load_package, save_model

    torch.manual_seed(0)
    folder = save_model(VideoDiT(micro_config), tmp_path / "pkg")
    verified = verify_folder(folder)
    torch.manual_seed(1)
    save_model(VideoDiT(micro_config), tmp_path / "other")
    (folder / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(ModelFileError, match=r"model.safetensors changed after it was verified"):
        load_package(verified)


def test_a_sharded_folder_naming_its_own_safetensors_describes_and_loads(tiny_pipelines, tmp_path):
    folder = shutil.copytree(tiny_pipelines["wan"], tmp_path / "wan")
    state = sharded_into(folder, "diffusion_pytorch_model-00001-of-00001.safetensors")
    shutil.copyfile(tiny_pipelines["wan"] / "transformer" / "diffusion_pytorch_model.safetensors",
                    folder / "transformer" / "diffusion_pytorch_model-00001-of-00001.safetensors")
    write_sums(folder)
    assert describe_model(folder).capabilities == describe_model(tiny_pipelines["wan"]).capabilities
    loaded = load_pipeline(folder, options=PipelineOptions(dtype="float32")).pipe.transformer.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())
