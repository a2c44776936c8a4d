"""A diffusers pipeline folder -> a vidgen model package: its files, a generated model card, SHA256SUMS.

The folder is checked first (model_index.json, every component present and of a class diffusers itself loads,
a text-to-video pipeline, safetensors weights only, every sharded-weights index naming listed safetensors), then
copied file by file with links resolved: only links into the folder itself or into its Hugging Face cache repo's
blob store (a cache snapshot is links into `blobs/`), any other link is refused by path. So the package holds the
bytes its sums name and nothing else, and nothing in the folder was imported or run.
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

from storage.cards import CardError, Lineage, invoked_command, model_card, parse_card
from storage.package import (
    CARD_FILE,
    PIPELINE_INDEX,
    ModelFileError,
    check_weight_indexes,
    open_package_file,
    package_files,
    write_sums,
)
from vidgen.pipelines.diffusers_folder import capabilities_of, check_components, parameter_counts, read_index, skeleton

README = "README.md"


def _licence_from_readme(folder: Path) -> str | None:
    """The `license` of a Hugging Face model card (README.md) in the folder, if it has one."""
    try:
        meta, _ = parse_card((folder / README).read_text(), README)
    except (OSError, CardError, UnicodeDecodeError):
        return None
    licence = meta.get("license")
    return str(licence) if licence else None


def diffusers_card(folder: Path, licence: str, source: str) -> str:
    """The model card of an imported pipeline: class, components with their parameter counts, what it makes,
    licence, and a lineage naming where it was imported from."""
    import diffusers

    class_name, components, _ = read_index(folder)
    caps = capabilities_of(skeleton(folder))
    counts = parameter_counts(folder)
    meta = {
        "pipeline_tag": "text-to-video",
        "library_name": "diffusers",
        "license": licence,
        "pipeline_class": class_name,
        "components": {name: {"class": f"{lib}.{cls}", **({"params": counts[name]} if name in counts else {})}
                       for name, (lib, cls) in components.items()},
        "params": sum(counts.values()),
        "capabilities": caps.model_dump(exclude={"dtype", "device"}),
    }
    lineage = Lineage(invoked_command("import_diffusers_folder()"), None, {
        "imported_from": source, "imported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "diffusers_version": diffusers.__version__})
    rows = "\n".join(f"| {name} | {lib}.{cls} | {f'{counts[name] / 1e6:.2f}M' if name in counts else '-'} |"
                     for name, (lib, cls) in components.items())
    body = f"""# {folder.name} ({class_name})

A diffusers text-to-video pipeline imported into vidgen from `{source}`, licence `{licence}`.
It makes frames {caps.frames.describe()}, height {caps.height.describe()}, width {caps.width.describe()};
by default {'x'.join(map(str, caps.shape))} at {caps.steps} steps, guidance {caps.guidance:g}
({'takes' if caps.negative_prompt else 'takes no'} negative prompts).

| component | class | parameters |
|---|---|---|
{rows}

Every file is listed in SHA256SUMS and checked before anything loads; weights are safetensors only.
"""
    return model_card(meta, lineage, body)


def import_diffusers_folder(src: str | Path, dest: str | Path, licence: str | None = None,
                            source: str | None = None) -> Path:
    """Package the pipeline folder `src` into the new folder `dest`; returns dest. `licence` defaults to the one
    in the folder's README.md; a ModelFileError names what is wrong with the folder."""
    src, dest = Path(src), Path(dest)
    if not (src / PIPELINE_INDEX).is_file():
        raise ModelFileError(f"{src} has no {PIPELINE_INDEX}: it is not a diffusers pipeline folder (save one with "
                             "pipeline.save_pretrained(FOLDER))")
    names = package_files(src)  # refuses pickled weights and links out of the folder
    check_weight_indexes(src, names)
    _, components, _ = read_index(src)
    check_components(src)  # by name, before anything is imported
    for name in components:
        part = src / name
        if (part / "config.json").is_file() and not any(part.glob("*.safetensors")):
            raise ModelFileError(f"component {name} in {part} has no .safetensors weights")
    licence = licence or _licence_from_readme(src)
    if not licence:
        raise ModelFileError(f"no licence given and {src / README} names none: pass --licence (e.g. apache-2.0) "
                             "as the model's publisher states it")
    dest.mkdir(parents=True, exist_ok=False)
    try:
        for name in names:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            with open_package_file(src, name) as source_file, open(dest / name, "xb") as copy:
                shutil.copyfileobj(source_file, copy)  # the package holds the bytes, never a link
        (dest / CARD_FILE).write_text(diffusers_card(dest, licence, source or str(src.resolve())))
        write_sums(dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest
