"""The one way a command line becomes a typed config: a YAML preset (vidgen/configs/NAME.yaml) or file, then
`--set key=value` overrides, then the command's own flags, validated once into the config's pydantic class."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from vidgen.clip_request import problems_of

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # package data: found by editable and wheel installs alike


class ConfigError(ValueError):
    """A config that cannot be loaded; the message names the key and how to fix it."""


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(cls: type[BaseModel], source: str | Path | Mapping | None = None, overrides: Iterable[str] = (),
                flags: Mapping[str, object] | None = None) -> BaseModel:
    """Build `cls` from layers, each overriding the one before (one order for every command and job):

    1. the defaults of `cls`;
    2. `source`: a preset name (a str without suffix: vidgen/configs/NAME.yaml), a YAML file (a Path, or a str
       with a suffix), a mapping already read (a run's saved config), or None;
    3. `overrides`, the `--set key=value` words, in order: a dotted key reaches into a section
       (`flow.t_mean=0.5`), and the value is read as YAML (`lr=5e-4`, `max_minutes=null`, `tags=[a, b]`);
    4. `flags`, the command's own options by (dotted) config key; None means the flag was not given.

    Flags win over `--set` because a flag is the narrower, named way to say the same thing. Whatever fails is one
    ConfigError naming every bad key with its fix, so a misspelt key never falls back to its default silently.
    """
    data = _read(source) if isinstance(source, str | Path) else copy.deepcopy(dict(source or {}))
    for override in overrides:
        apply_override(data, override)
    for key, value in (flags or {}).items():
        if value is not None:
            _put(data, key, value, f"flag for {key}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        label = f"config {str(source)!r}" if isinstance(source, str | Path) else cls.__name__
        problems = "; ".join(_with_fix(cls, e, problem) for e, problem in
                             zip(err.errors(), problems_of(err), strict=True))
        raise ConfigError(f"invalid {label}: {problems}") from None


def apply_override(data: dict, override: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (numbers, lists, null)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} must look like key=value, e.g. lr=0.0005 or flow.t_mean=0.5")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {override!r}: the value is not YAML ({_yaml_problem(err)})") from None
    _put(data, key, value, f"override {override!r}")


def _read(source: str | Path) -> dict:
    path = Path(source)
    if isinstance(source, str) and not path.suffix:
        path = CONFIG_DIR / f"{source}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown preset {source!r}; choose one of {preset_names()} or pass a YAML file")
    elif not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with path.open() as f:
            data = yaml.safe_load(f) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    return data


def _put(data: dict, dotted: str, value: object, origin: str) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        if node.get(part) is None:  # absent, or an empty section (`distill:` with nothing under it)
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"{origin}: {part!r} is not a section")
    node[leaf] = value


def _with_fix(cls: type[BaseModel], error: dict, problem: str) -> str:
    """An unknown key gets its fix: the nearest known key of its section, or the section's keys."""
    *section, key = error["loc"] or ("",)
    known = _keys_at(cls, section) if error["type"] == "extra_forbidden" else []
    if not known:
        return problem
    close = difflib.get_close_matches(str(key), known, n=1)
    return f"{problem}; did you mean {close[0]!r}?" if close else f"{problem}; the keys here are {', '.join(known)}"


def _keys_at(cls: type[BaseModel], section: list) -> list[str]:
    for part in section:
        field = cls.model_fields.get(str(part))
        cls = field.annotation if field else None
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return []
    return list(cls.model_fields)


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{getattr(error, 'problem', None) or error}{where}"
