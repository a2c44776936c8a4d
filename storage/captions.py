"""The captions file of an ingest: one CSV or JSONL row a video, with the names other projects use.

    path      the video's path relative to the source folder or prefix (required)
    caption   what it shows (required; `text` accepted, as Open-Sora's CSVs name it)
    licence   an SPDX id or a free string (required; `license` accepted)
    source    where the video came from (optional, default: the path); the train/eval split is made by source

A bad row is reported (line, path, reason) and skipped; it never stops the others. A CSV is cut into records
(a record ends at a line end outside quotes) before the `csv` module reads each one, so a cell over the module's
field limit (128 KiB) is that record's error, and the next record is read from where this one ended.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

ALIASES = {"caption": ("caption", "text"), "licence": ("licence", "license")}
MAX_CAPTION_CHARS = 1000


@dataclass(frozen=True)
class CaptionRow:
    line: int
    path: str
    caption: str
    licence: str
    source: str


@dataclass(frozen=True)
class CaptionError:
    line: int
    path: str
    reason: str


def _records(data: bytes, fmt: str) -> list[tuple[int, dict | None, str]]:
    """(line, record or None, why not) per row of a CSV or JSONL file."""
    text = data.decode("utf-8-sig", errors="replace")
    if fmt == "csv":
        return _csv_rows(text)
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            rows.append((number, None, f"not JSON ({e})"))
            continue
        rows.append((number, record, "") if isinstance(record, dict) else (number, None, "not a JSON object"))
    return rows


def _csv_rows(text: str) -> list[tuple[int, dict | None, str]]:
    """(first line, {column: cell}, "") per record after the header; a record the `csv` module refuses (a cell over
    its field limit) is read by `_cells` so its path can be named, and is an error."""
    rows: list[tuple[int, dict | None, str]] = []
    header: list[str] | None = None
    for line, record in _csv_records(text):
        try:
            cells = next(csv.reader(io.StringIO(record, newline="")), [])
            problem = ""
        except csv.Error as e:
            cells, problem = _cells(record), f"unreadable CSV record ({e})"
        if not cells:  # a blank line
            continue
        if header is None:
            header = cells
            continue
        rows.append((line, dict(zip(header, cells, strict=False)), problem))
    return rows


def _csv_records(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each CSV record: lines are joined while a quote is open (RFC 4180 doubles a
    quote inside a quoted cell, so an odd count of quotes so far means one is open)."""
    parts: list[str] = []
    quotes, first = 0, 1
    for number, line in enumerate(io.StringIO(text, newline=""), 1):
        if not parts:
            first = number
        parts.append(line)
        quotes += line.count('"')
        if quotes % 2 == 0:
            yield first, "".join(parts)
            parts, quotes = [], 0
    if parts:
        yield first, "".join(parts)


_CELL = re.compile(r'"([^"]*(?:""[^"]*)*)"|([^,\r\n]*)')


def _cells(record: str) -> list[str]:
    """The cells of one CSV record without the `csv` module's field limit (only to name a refused row)."""
    cells, position = [], 0
    while True:
        match = _CELL.match(record, position)
        cells.append(match[1].replace('""', '"') if match[1] is not None else match[2])
        position = match.end()
        if record[position:position + 1] != ",":
            return cells
        position += 1


def _field(record: dict, name: str) -> str:
    for alias in ALIASES.get(name, (name,)):
        value = record.get(alias)
        if value not in (None, ""):
            return str(value).strip()
    return ""


def parse_captions(data: bytes, fmt: str) -> tuple[dict[str, CaptionRow], list[CaptionError]]:
    """{path: row} of the good rows, and every bad row: no path, no caption, no licence, a path given twice, a
    path that leaves the source folder."""
    rows: dict[str, CaptionRow] = {}
    errors = []
    for line, record, why in _records(data, fmt):
        if record is None:
            errors.append(CaptionError(line, "", why))
            continue
        path = _field(record, "path")
        path = path[2:] if path.startswith("./") else path
        if why:
            errors.append(CaptionError(line, path, why))
            continue
        caption, licence = _field(record, "caption"), _field(record, "licence")
        problem = ("no path" if not path else
                   "the path leaves the source folder" if path.startswith("/") or ".." in path.split("/") else
                   "no caption (column caption or text)" if not caption else
                   f"caption over {MAX_CAPTION_CHARS} characters" if len(caption) > MAX_CAPTION_CHARS else
                   "no licence (column licence or license)" if not licence else
                   f"path given twice (first on line {rows[path].line})" if path in rows else "")
        if problem:
            errors.append(CaptionError(line, path, problem))
            continue
        rows[path] = CaptionRow(line, path, caption, licence, _field(record, "source") or path)
    return rows, errors


def captions_format(name: str) -> str:
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    raise ValueError(f"captions file {name!r}: use a .csv or .jsonl file (columns path, caption, licence, source)")
