"""Load typed configs from YAML presets (vidgen/configs/NAME.yaml) or files, with dotted `key=value` overrides."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # package data: found by editable and wheel installs alike


class ConfigError(ValueError):
    """A config that cannot be loaded; the message names the key and how to fix it."""


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _read(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown preset {name_or_path!r}; choose one of {preset_names()} or pass a YAML file")
    elif not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    return data


def apply_override(data: dict, override: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (numbers, lists, null)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} must look like key=value, e.g. lr=0.0005 or flow.t_mean=0.5")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
    node[leaf] = yaml.safe_load(raw)


def load_config(cls: type[BaseModel], name_or_path: str, overrides: list[str] = ()) -> BaseModel:
    """Build `cls` from a preset name or YAML path plus overrides; unknown or invalid keys raise ConfigError."""
    data = _read(name_or_path)
    for override in overrides:
        apply_override(data, override)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid config {name_or_path!r}: {problems}") from None
