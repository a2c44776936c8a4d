"""Cards: Markdown with a YAML header (the Hugging Face card format), for data sets and models alike.

Every model card the project writes (trained, distilled, imported models and feature nets) goes through
`model_card`, which records where the model came from in one schema (`Lineage`) under the header's `lineage` key,
so a reader finds the commit, the command and the seed in the same place on every card.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SOURCE_ROOT = Path(__file__).resolve().parents[1]


class CardError(ValueError):
    """A card without a readable YAML header."""


def git_commit() -> str:
    """The short commit of this checkout (recorded in model cards), or 'unknown' outside git (a wheel install)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=SOURCE_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def invoked_command(fallback: str) -> str:
    """The `vidgen` command line this process runs, as a person would type it again; `fallback` when it was not
    started from one (a test or a notebook calling the function)."""
    return "vidgen " + shlex.join(sys.argv[1:]) if sys.argv[1:] else fallback


@dataclass(frozen=True)
class Lineage:
    """Where a model came from: the code (git commit), the command and the seed that made it (None where nothing
    was drawn at random, as in an import), then what it was made from, keyed by its kind of source: `dataset`
    (trained), `teacher` (distilled), `imported_from` (imported), with whatever else that source records."""

    command: str
    seed: int | None
    source: dict = field(default_factory=dict)
    git_commit: str = field(default_factory=git_commit)

    def __post_init__(self):
        shadowed = {"git_commit", "command", "seed"} & set(self.source)
        if shadowed:
            raise ValueError(f"a lineage's source may not set {sorted(shadowed)}: they are the lineage's own")

    def to_dict(self) -> dict:
        return {"git_commit": self.git_commit, "command": self.command, "seed": self.seed, **self.source}


def model_card(meta: dict, lineage: Lineage, body: str) -> str:
    """The card of a model: the header keys of its kind (`pipeline_tag`, `library_name`, `license`, metrics, ...),
    then its `lineage`, then the Markdown body."""
    if "lineage" in meta:
        raise ValueError("a model card's lineage is the `lineage` argument, not a header key")
    return render_card({**meta, "lineage": lineage.to_dict()}, body)


def render_card(meta: dict, body: str) -> str:
    """`---`, the YAML header, `---`, then the Markdown body."""
    header = yaml.safe_dump(meta, sort_keys=False, default_flow_style=None, width=120)
    return f"---\n{header}---\n{body.lstrip()}"


def parse_card(text: str, name: str = "card") -> tuple[dict, str]:
    """(YAML header as a dict, Markdown body); CardError naming `name` when the header is missing or broken."""
    if not text.startswith("---\n"):
        raise CardError(f"{name} does not start with a '---' YAML header")
    header, sep, body = text[4:].partition("\n---\n")
    if not sep:
        raise CardError(f"{name} has no closing '---' after its YAML header")
    try:
        meta = yaml.safe_load(header) or {}
    except yaml.YAMLError as e:
        raise CardError(f"{name} has a broken YAML header: {e}".splitlines()[0]) from e
    if not isinstance(meta, dict):
        raise CardError(f"{name}'s YAML header is not a mapping")
    return meta, body
