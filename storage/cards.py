"""Cards: Markdown with a YAML header (the Hugging Face card format), for data sets and models alike."""

from __future__ import annotations

import yaml


class CardError(ValueError):
    """A card without a readable YAML header."""


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
