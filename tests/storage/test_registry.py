"""The model registry on a local folder and on the loopback S3 endpoint: versions, latest, verification."""

import pytest

from storage.objectstore import StorageError
from storage.package import ModelFileError, write_sums
from storage.registry import list_models, list_versions, model_location, parse_ref, pull, push, resolve


def _package(folder, weights=b"w" * 1000):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model": {}}\n')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "card.md").write_text("---\npipeline_tag: text-to-video\n---\n# a model\n")
    write_sums(folder)
    return folder


def test_push_twice_then_pull_latest_and_a_pinned_version(store_root, tmp_path):
    store, root = store_root
    assert push(_package(tmp_path / "a", b"first"), f"{root}/shapes", store) == "v1"
    assert push(_package(tmp_path / "b", b"second"), f"{root}/shapes", store) == "v2"
    assert list_versions(f"{root}/shapes", store) == ["v1", "v2"]
    assert list_models(root, store) == {"shapes": ["v1", "v2"]}
    latest = pull("shapes@latest", root, store, cache_dir=tmp_path / "cache")
    assert latest.parent == tmp_path / "cache" / "shapes" and latest.name.startswith("v2-")
    assert (latest / "model.safetensors").read_bytes() == b"second"
    pinned = pull("shapes@v1", root, store, cache_dir=tmp_path / "cache")
    assert (pinned / "model.safetensors").read_bytes() == b"first"
    assert pull(f"{root}/shapes@v1", store=store, cache_dir=tmp_path / "cache") == pinned  # full URI form


def test_a_version_without_its_sums_is_invisible(store_root, tmp_path):
    store, root = store_root
    push(_package(tmp_path / "a"), f"{root}/shapes", store)
    store.write(f"{root}/shapes/v2/model.safetensors", b"half-uploaded")  # a push that died before SHA256SUMS
    assert list_versions(f"{root}/shapes", store) == ["v1"]
    assert resolve("shapes@latest", root, store).version == "v1"
    assert push(_package(tmp_path / "b"), f"{root}/shapes", store) == "v2"  # the dead push's number is reusable...
    store.write(f"{root}/shapes/v3/.claim", b"")  # ...but a claimed one is not
    assert push(_package(tmp_path / "c"), f"{root}/shapes", store) == "v4"


def test_tampered_stored_weights_are_refused_on_pull(store_root, tmp_path):
    store, root = store_root
    push(_package(tmp_path / "a"), f"{root}/shapes", store)
    store.write(f"{root}/shapes/v1/model.safetensors", b"w" * 999 + b"X")
    with pytest.raises(ModelFileError, match=r"model.safetensors does not match its SHA256SUMS.*push the model again"):
        pull("shapes@v1", root, store, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("v1*"))


def test_the_same_name_and_version_from_two_registries_are_two_models(tmp_path):
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    push(_package(tmp_path / "a", b"our weights"), f"{ours}/shapes")
    push(_package(tmp_path / "b", b"their weights"), f"{theirs}/shapes")
    cache = tmp_path / "cache"
    mine = pull("shapes@v1", ours, cache_dir=cache)
    other = pull(f"{theirs}/shapes@v1", cache_dir=cache)
    assert mine != other
    assert (mine / "model.safetensors").read_bytes() == b"our weights"
    assert (other / "model.safetensors").read_bytes() == b"their weights"
    assert pull("shapes@v1", ours, cache_dir=cache) == mine  # and each is found again in the cache


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "x..y", "sub/../escape"])
def test_names_that_would_leave_the_registry_are_refused(name, tmp_path):
    root = str(tmp_path / "registry")
    with pytest.raises(StorageError, match="not a model name"):
        model_location(root, name)  # what `vidgen models push FOLDER NAME` pushes to
    if "/" not in name or ".." in name:
        with pytest.raises(StorageError, match="not a model name|'..'"):
            parse_ref(f"{name}@v1", root)


def test_the_cli_refuses_to_push_outside_the_registry(micro_model_dir, tmp_path):
    from typer.testing import CliRunner

    from vidgen.cli import app

    folder, _ = micro_model_dir
    result = CliRunner().invoke(app, ["models", "push", str(folder), "../escape", "--root", str(tmp_path / "reg")])
    assert result.exit_code == 1 and "not a model name" in result.output
    assert not (tmp_path / "escape").exists()


def test_a_tampered_cached_copy_is_refused(tmp_path):
    root = str(tmp_path / "registry")
    push(_package(tmp_path / "a"), f"{root}/shapes")
    folder = pull("shapes", root, cache_dir=tmp_path / "cache")
    (folder / "card.md").write_text("edited")
    with pytest.raises(ModelFileError, match="card.md does not match"):
        pull("shapes", root, cache_dir=tmp_path / "cache")
    write_sums(folder)  # the cached copy's own list rewritten to match: still not what the registry holds
    with pytest.raises(ModelFileError, match="does not match .*SHA256SUMS: it was changed after it was pulled"):
        pull("shapes", root, cache_dir=tmp_path / "cache")


def test_a_damaged_local_package_is_not_pushed(tmp_path):
    folder = _package(tmp_path / "a")
    (folder / "model.safetensors").write_bytes(b"changed after the sums were written")
    with pytest.raises(ModelFileError, match="model.safetensors does not match"):
        push(folder, str(tmp_path / "registry" / "shapes"))
    assert list_models(str(tmp_path / "registry")) == {}


def test_references_parse_and_bad_ones_say_how_to_write_them(tmp_path):
    root = str(tmp_path / "registry")
    assert parse_ref("shapes", root).version == "latest"
    ref = parse_ref("registry://shapes@v12", root)
    assert (ref.name, ref.version, ref.model_uri.uri) == ("shapes", "v12", f"file://{root}/shapes")
    assert parse_ref("s3://bucket/models/shapes@v2").model_uri.uri == "s3://bucket/models/shapes"
    with pytest.raises(StorageError, match="use vN"):
        parse_ref("shapes@2", root)
    with pytest.raises(StorageError, match="no versions of model 'nothing'.*vidgen models push"):
        resolve("nothing@latest", root)
    push(_package(tmp_path / "a"), f"{root}/shapes")
    with pytest.raises(StorageError, match="has no version v7.*it has v1"):
        resolve("shapes@v7", root)


def test_a_pushed_model_generates_through_the_cli(micro_model_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from vidgen.cli import app

    monkeypatch.setenv("VIDGEN_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("VIDGEN_CACHE", str(tmp_path / "cache"))
    folder, _ = micro_model_dir
    runner = CliRunner()
    pushed = runner.invoke(app, ["models", "push", str(folder), "micro"])
    assert pushed.exit_code == 0 and "micro@v1" in pushed.output
    listed = runner.invoke(app, ["models", "list"])
    assert "micro: v1 (latest v1)" in listed.output
    made = runner.invoke(app, ["generate", "a red square moving right", "--model", "micro@latest", "--steps", "2",
                               "--out", str(tmp_path / "clip.gif")])
    assert made.exit_code == 0, made.output
    assert (tmp_path / "clip.gif").stat().st_size > 0
    missing = runner.invoke(app, ["generate", "a red square", "--model", "micro@v9", "--out", str(tmp_path / "x.gif")])
    assert missing.exit_code == 1 and "has no version v9" in missing.output
