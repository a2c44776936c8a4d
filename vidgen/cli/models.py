"""`vidgen models push|import|pull|list`: versioned model packages in a registry (a folder or an S3 prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidgen.cli._common import fail, setup_logging

app = typer.Typer(help="Models: push vidgen packages or import diffusers pipeline folders as versions (NAME@vN, "
                       "NAME@latest); pull and list them.",
                  no_args_is_help=True)

ROOT_HELP = "registry root: a folder or s3://BUCKET/PREFIX (default: $VIDGEN_REGISTRY or ~/.vidgen/registry)"


@app.command()
def push(
    folder: Annotated[Path, typer.Argument(help="a model package folder (config.json, model.safetensors, "
                                                "card.md, SHA256SUMS), e.g. the --out of vidgen train")],
    name: Annotated[str, typer.Argument(help="model name in the registry, e.g. shapes")],
    root: Annotated[str | None, typer.Option(help=ROOT_HELP)] = None,
) -> None:
    """Verify a model package and upload it as the next version of NAME (v1, v2, ...)."""
    setup_logging()
    from storage.objectstore import StorageError
    from storage.package import ModelFileError
    from storage.registry import model_location
    from storage.registry import push as push_model
    from storage.user_state import registry_root

    try:
        model_uri = model_location(root or registry_root(), name).uri
        version = push_model(folder, model_uri)
    except (StorageError, ModelFileError) as err:
        fail(str(err))
    typer.echo(f"pushed {folder} as {name}@{version} to {model_uri}/{version}")


@app.command("import")
def import_(
    folder: Annotated[Path, typer.Argument(help="a diffusers pipeline folder (model_index.json and one subfolder "
                                                "per component), e.g. what pipeline.save_pretrained wrote")],
    name: Annotated[str, typer.Argument(help="model name in the registry, e.g. wan-1.3b")],
    licence: Annotated[str | None, typer.Option(help="the model's licence as its publisher states it (e.g. "
                                                     "apache-2.0); default: the license in FOLDER/README.md")] = None,
    source: Annotated[str | None, typer.Option(help="where the weights came from, for the card (e.g. "
                                                    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers); default: the folder")] = None,
    root: Annotated[str | None, typer.Option(help=ROOT_HELP)] = None,
) -> None:
    """Package a diffusers pipeline folder (every file checked, a model card written, SHA256SUMS over all files) and
    upload it as the next version of NAME. Pickled weights (.bin, .pt) are refused: convert them to safetensors."""
    setup_logging()
    import tempfile

    from storage.objectstore import StorageError
    from storage.package import ModelFileError
    from storage.registry import model_location
    from storage.registry import push as push_model
    from storage.user_state import registry_root
    from vidgen.runtime.model_import import import_diffusers_folder

    try:
        model_uri = model_location(root or registry_root(), name).uri
        with tempfile.TemporaryDirectory(prefix="vidgen-import-") as tmp:
            package = import_diffusers_folder(folder, Path(tmp) / name, licence, source)
            files = sum(1 for p in package.rglob("*") if p.is_file())
            version = push_model(package, model_uri)
    except (StorageError, ModelFileError) as err:
        fail(str(err))
    typer.echo(f"imported {folder} ({files} files with card.md and SHA256SUMS) as {name}@{version} to "
               f"{model_uri}/{version}")


@app.command()
def pull(
    ref: Annotated[str, typer.Argument(help="NAME@vN, NAME@latest, NAME, or s3://…/NAME@vN")],
    root: Annotated[str | None, typer.Option(help=ROOT_HELP)] = None,
) -> None:
    """Download a model version into the local cache, verify every file, and print its folder."""
    setup_logging()
    from storage.objectstore import StorageError
    from storage.package import ModelFileError
    from storage.registry import pull as pull_model

    try:
        folder = pull_model(ref, root)
    except (StorageError, ModelFileError) as err:
        fail(str(err))
    typer.echo(str(folder))


@app.command("list")
def list_(
    root: Annotated[str | None, typer.Option(help=ROOT_HELP)] = None,
) -> None:
    """List every model in the registry with its complete versions."""
    setup_logging()
    from storage.objectstore import StorageError
    from storage.registry import list_models
    from storage.user_state import registry_root

    try:
        models = list_models(root)
    except StorageError as err:
        fail(str(err))
    if not models:
        typer.echo(f"no models in {root or registry_root()}")
    for name, versions in models.items():
        typer.echo(f"{name}: {', '.join(versions)} (latest {versions[-1]})")
