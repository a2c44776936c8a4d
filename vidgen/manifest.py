"""Render manifests: JSONL or CSV rows of `{id, prompt, seed?, frames?, height?, width?, steps?, guidance?, ...}`.

Each row is a `ClipRequest` (`vidgen.clip_request`: the bounds every path shares) plus the id naming its output.
A row naming a serving `tier` is refused: a bulk render has one model for every row, and rendering the row with a
model it did not ask for would be a silent substitution.

Manifests come from users and other tools, so every field is untrusted: ids become object keys and must be
plain names, numbers are range-checked, unknown keys are refused. Validation never stops at the first problem:
every bad row is reported as a `RowError` (line numbers as an editor shows them) and the good rows go on.
A missing seed is derived from a digest of (run seed, id), so re-runs and other machines agree on it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import asdict, dataclass

from pydantic import Field, ValidationError, field_validator

from vidgen.clip_request import ClipRequest, field_problems

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
TIER_REFUSED = ("bulk render uses one model for every row (--model, or `model` in the render config); remove "
                "`tier`, or put each tier's rows in a manifest of their own and render it with that tier's model")
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
FORMATS = ("jsonl", "csv")


class ManifestRow(ClipRequest):
    """One clip to render: a clip request with the id that names its output. Unset fields take the run's defaults."""

    id: str = Field(pattern=ID_PATTERN, description="names the output object: letters, digits, . _ -")
    tier: None = Field(None, description="refused when given: a bulk render has one model (see TIER_REFUSED)")

    @field_validator("id")
    @classmethod
    def _portable_file_name(cls, value: str) -> str:
        if value.split(".")[0].upper() in WINDOWS_RESERVED:
            raise ValueError(f"{value!r} is a reserved file name on Windows; choose another id")
        return value

    @field_validator("tier", mode="before")
    @classmethod
    def _one_model_per_run(cls, value: object) -> None:
        """Before type checks, so that every value a row gives (`"edge"`, `"gpu"`, 3) gets the reason that helps."""
        if value is not None:
            raise ValueError(TIER_REFUSED)
        return None


@dataclass(frozen=True)
class RowError:
    """A manifest row that will not be rendered, and why; one line of errors.jsonl."""

    line: int
    id: str | None
    field: str | None
    reason: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class Row:
    line: int
    row: ManifestRow


def derive_seed(run_seed: int, row_id: str) -> int:
    """A stable seed for a row without one: the same on every run and machine (unlike Python's `hash`)."""
    digest = hashlib.sha256(f"{run_seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def output_key(row: ManifestRow) -> str:
    """Where a row's video goes under the output URI; derived from the row alone, so re-runs find it."""
    return f"videos/{row.id}.mp4"


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """json.loads' object hook: a key given twice in one object is an error, not "the last one wins"."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(f"the key {key!r} appears twice in this row")
        seen[key] = value
    return seen


def _json_row(line: str) -> tuple[dict | None, str | None]:
    try:
        record = json.loads(line, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at column {e.colno})"
    except _DuplicateKey as e:
        return None, str(e)
    except ValueError as e:  # e.g. an integer of more digits than Python converts (4300)
        return None, f"not a usable JSON row: {str(e).split(';')[0]}"
    except RecursionError:
        return None, "not a usable JSON row: nested too deeply"
    if not isinstance(record, dict):
        return None, f"a row must be a JSON object, not {type(record).__name__}"
    return record, None


def _records(data: bytes, fmt: str) -> list[tuple[int, dict | None, str | None]]:
    """(line, record or None, why not) for every non-blank row of the file; no row's content can end the parse."""
    text = data.decode("utf-8-sig")  # tolerate a byte-order mark, as spreadsheet exports write one
    records: list[tuple[int, dict | None, str | None]] = []
    if fmt == "jsonl":
        # Lines end at \n (and \r\n) only: str.splitlines() also splits at U+2028, U+2029 and U+0085, which are
        # valid inside JSON strings, and would cut one good row in two and shift every later line number.
        for number, line in enumerate(text.split("\n"), 1):
            if line.strip():
                records.append((number, *_json_row(line.removesuffix("\r"))))
        return records
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in reader.fieldnames or []]
    except csv.Error as e:
        return [(1, None, f"the header is not a usable CSV row: {e}")]
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:  # which of the two would a row mean? (JSON rows refuse a repeated key too)
        return [(1, None, f"the header names the column(s) {', '.join(map(repr, twice))} more than once")]
    while True:
        last_line = reader.line_num
        try:
            record = next(reader)
        except StopIteration:
            return records
        except csv.Error as e:  # e.g. a cell over the csv module's field limit (128 KiB)
            records.append((last_line + 1, None, f"not a usable CSV row: {e}"))
            continue
        number = reader.line_num
        if None in record:
            records.append((number, None, "more cells than the header has columns"))
            continue
        cleaned = {k.strip(): v for k, v in record.items() if v is not None and v.strip() != ""}
        if cleaned:
            records.append((number, cleaned, None))


def parse_manifest(data: bytes, fmt: str) -> tuple[list[Row], list[RowError]]:
    """Validate every row; returns the good rows and one RowError per bad row (duplicated ids: every occurrence)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown manifest format {fmt!r}: name the file .jsonl or .csv")
    try:
        records = _records(data, fmt)
    except UnicodeDecodeError as e:
        raise ValueError(f"the manifest is not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows, errors = [], []
    for number, record, problem in records:
        if record is None:
            errors.append(RowError(number, None, None, problem))
            continue
        row_id = record.get("id") if isinstance(record.get("id"), str) else None
        try:
            rows.append(Row(number, ManifestRow.model_validate(record)))
        except ValidationError as e:
            errors.extend(RowError(number, row_id, problem.field or None, problem.reason)
                          for problem in field_problems(e, whole=""))
    # Ids name files, and common filesystems (macOS, Windows) do not tell `Clip` from `clip`.
    lines_by_id: dict[str, list[int]] = {}
    for r in rows:
        lines_by_id.setdefault(r.row.id.casefold(), []).append(r.line)
    duplicated = {i: lines for i, lines in lines_by_id.items() if len(lines) > 1}
    for r in rows:
        if r.row.id.casefold() in duplicated:
            others = ", ".join(str(n) for n in duplicated[r.row.id.casefold()])
            errors.append(RowError(r.line, r.row.id, "id", f"duplicate id: it appears on lines {others} (ids that "
                                                             "differ only by case count as one); ids name the output "
                                                             "files, so each must be unique"))
    good = [r for r in rows if r.row.id.casefold() not in duplicated]
    return good, sorted(errors, key=lambda e: (e.line, e.field or ""))


def manifest_format(name: str) -> str:
    """'jsonl' or 'csv' from a file name; ValueError naming the fix otherwise."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix == "csv":
        return "csv"
    raise ValueError(f"cannot tell the manifest format of {name!r}: name it .jsonl (one JSON object a line) or .csv")
