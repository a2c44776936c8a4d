"""Model package folders as untrusted input: links out of the folder, sharded-weights indexes naming other files,
and files changed between verification and loading."""

import json
import os

import pytest

from storage.package import (
    ModelFileError,
    check_weight_indexes,
    package_files,
    private_copy,
    read_verified,
    tree_sums,
    verify_folder,
    verify_package,
    write_sums,
)


def a_folder(root, name="model"):
    folder = root / name
    (folder / "vae").mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "WanPipeline"}')
    (folder / "vae" / "config.json").write_text("{}")
    (folder / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    return folder


@pytest.mark.parametrize("target", ["secret", "/proc/self/environ"])
def test_a_link_out_of_the_folder_is_refused_by_path_and_never_summed(target, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("AWS_SECRET_ACCESS_KEY=not-for-a-package\n")
    folder = a_folder(tmp_path)
    (folder / "vae" / "notes.txt").symlink_to(secret if target == "secret" else target)
    for read in (package_files, tree_sums, write_sums, verify_folder):
        with pytest.raises(ModelFileError, match=r"vae/notes.txt is a link to /\S+, outside the folder"):
            read(folder)
    assert not (folder / "SHA256SUMS").exists()


def test_links_into_the_folder_or_its_own_hub_blob_store_are_followed(tmp_path):
    repo = tmp_path / "hub" / "models--org--wan"
    snapshot = a_folder(repo / "snapshots", "0123abc")
    (repo / "blobs").mkdir()
    (repo / "blobs" / "abc").write_bytes(b"tokenizer")
    (snapshot / "tokenizer").mkdir()
    (snapshot / "tokenizer" / "tokenizer.json").symlink_to("../../../blobs/abc")
    (snapshot / "vae" / "again.json").symlink_to("config.json")
    sums = tree_sums(snapshot)
    assert sorted(sums) == ["model_index.json", "tokenizer/tokenizer.json", "vae/again.json", "vae/config.json",
                            "vae/diffusion_pytorch_model.safetensors"]
    assert sums["vae/again.json"] == sums["vae/config.json"]
    assert verify_folder(snapshot).sums == sums

    elsewhere = a_folder(tmp_path, "not-a-snapshot")  # the same link outside a Hugging Face cache layout
    (elsewhere / "tokenizer").mkdir()
    (elsewhere / "tokenizer" / "tokenizer.json").symlink_to(repo / "blobs" / "abc")
    with pytest.raises(ModelFileError, match=r"tokenizer/tokenizer.json is a link to .*blobs/abc, outside"):
        package_files(elsewhere)


def test_a_link_to_a_folder_a_broken_link_or_a_fifo_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    cases = {"linked-folder": lambda f: (f / "text_encoder").symlink_to(outside),
             "broken": lambda f: (f / "vae" / "gone.json").symlink_to(tmp_path / "gone"),
             "fifo": lambda f: os.mkfifo(f / "vae" / "pipe")}
    messages = {"linked-folder": r"text_encoder is a link to a folder", "broken": r"vae/gone.json is a broken link",
                "fifo": r"vae/pipe is not a regular file"}
    for case, make in cases.items():
        folder = a_folder(tmp_path, case)
        make(folder)
        with pytest.raises(ModelFileError, match=messages[case]):
            package_files(folder)


@pytest.mark.parametrize(("weight_map", "refused"), [
    ({"w": "model-00001.safetensors"}, None),
    ({"w": "weights.dat"}, "weights.dat"),
    ({"w": "model-00001.safetensors", "v": "model-00002.bin"}, "model-00002.bin"),
    ({"w": "missing.safetensors"}, "missing.safetensors"),
    ({"w": "../vae/diffusion_pytorch_model.safetensors"}, "../vae/diffusion_pytorch_model.safetensors"),
])
def test_a_sharded_index_names_only_listed_safetensors_beside_it(weight_map, refused, tmp_path):
    folder = a_folder(tmp_path)
    (folder / "transformer").mkdir()
    (folder / "transformer" / "model-00001.safetensors").write_bytes(b"shard")
    (folder / "transformer" / "weights.dat").write_bytes(b"a pickle")
    index = folder / "transformer" / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    write_sums(folder)
    if refused is None:
        check_weight_indexes(folder, package_files(folder))
        assert "transformer/model.safetensors.index.json" in verify_package(folder)
        return
    match = rf"model.safetensors.index.json names the weight file '{refused}', which is not a .safetensors file"
    for verify in (verify_package, verify_folder):
        with pytest.raises(ModelFileError, match=match):
            verify(folder)


def test_an_index_without_a_weight_map_is_refused(tmp_path):
    folder = a_folder(tmp_path)
    (folder / "vae" / "diffusion_pytorch_model.safetensors.index.json").write_text("[1, 2]")
    with pytest.raises(ModelFileError, match=r"index.json is not a readable sharded-weights index"):
        verify_folder(folder)


def test_loaders_read_what_was_verified_not_the_folder_again(tmp_path):
    folder = a_folder(tmp_path)
    write_sums(folder)
    verified = verify_folder(folder)
    with private_copy(verified) as copy:
        assert copy != folder and oct(copy.stat().st_mode & 0o777) == "0o700"
        assert (copy / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == b"weights"
        assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == sorted(
            verified.sums)
    assert not copy.exists()
    with private_copy(verified, ["vae/config.json"]) as only_config:
        assert [p.name for p in only_config.rglob("*") if p.is_file()] == ["config.json"]

    (folder / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"swapped")
    with pytest.raises(ModelFileError, match=r"diffusion_pytorch_model.safetensors changed after it was verified"):
        read_verified(verified, "vae/diffusion_pytorch_model.safetensors")
    with pytest.raises(ModelFileError, match=r"diffusion_pytorch_model.safetensors changed after it was verified"):
        with private_copy(verified):
            pass
    (folder / "vae" / "config.json").unlink()
    (folder / "vae" / "config.json").symlink_to("/dev/zero")  # a copy would never end
    with pytest.raises(ModelFileError, match=r"vae/config.json changed after it was verified"):
        with private_copy(verified, ["vae/config.json"]):
            pass
