"""Manifest validation: every bad row reported with its line, the good ones kept, nothing trusted."""

import json

import pytest

from vidgen.manifest import derive_seed, manifest_format, output_key, parse_manifest


def _jsonl(*rows) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()


def test_good_rows_parse_with_optional_fields_left_unset():
    rows, errors = parse_manifest(_jsonl({"id": "a1", "prompt": "a red square moving up", "seed": 3},
                                         "", {"id": "b.2", "prompt": "  a blue circle  ", "steps": 8}),
                                  "jsonl")
    assert errors == []
    assert [(r.line, r.row.id) for r in rows] == [(1, "a1"), (3, "b.2")]
    assert rows[1].row.prompt == "a blue circle" and rows[1].row.seed is None
    assert output_key(rows[0].row) == "videos/a1.mp4"


def test_a_row_naming_a_tier_is_refused_with_what_to_do_instead():
    """A bulk render has one model for every row: a row asking for a tier is never rendered with another model."""
    rows, errors = parse_manifest(_jsonl({"id": "e", "prompt": "x", "tier": "edge"},
                                         {"id": "g", "prompt": "x", "tier": "gpu"},
                                         {"id": "n", "prompt": "x", "tier": None},
                                         {"id": "both", "prompt": "", "tier": "cloud"}), "jsonl")
    assert [r.row.id for r in rows] == ["n"]  # null names no tier
    assert [(e.line, e.id, e.field) for e in errors] == [(1, "e", "tier"), (2, "g", "tier"), (4, "both", "prompt"),
                                                         (4, "both", "tier")]
    assert all("one model for every row" in e.reason and "remove `tier`" in e.reason
               for e in errors if e.field == "tier")
    rows, errors = parse_manifest(b"id,prompt,tier\nc1,a red square,cloud\nc2,a blue circle,\n", "csv")
    assert [r.row.id for r in rows] == ["c2"] and [(e.line, e.field) for e in errors] == [(2, "tier")]


def test_every_bad_row_is_reported_with_its_line_and_field():
    data = _jsonl(
        {"id": "ok", "prompt": "a red square moving up"},
        {"id": "no-prompt"},
        {"id": "neg", "prompt": "x", "frames": -8},
        {"id": "extra", "prompt": "x", "colour": "red"},
        '{"id": "broken", "prompt": ',
        {"id": "dup", "prompt": "x"},
        {"id": "dup", "prompt": "y"},
        {"id": "../escape", "prompt": "x"},
        "[1, 2]",
        {"id": "fine", "prompt": "a green circle moving left", "guidance": 3.5},
    )
    rows, errors = parse_manifest(data, "jsonl")
    assert [r.row.id for r in rows] == ["ok", "fine"]
    found = {(e.line, e.field) for e in errors}
    assert found == {(2, "prompt"), (3, "frames"), (4, "colour"), (5, None), (6, "id"), (7, "id"), (8, "id"),
                     (9, None)}
    by_line = {e.line: e for e in errors}
    assert by_line[4].reason == "unknown field" and by_line[2].id == "no-prompt"
    assert "not valid JSON" in by_line[5].reason and "JSON object" in by_line[9].reason
    assert "lines 6, 7" in by_line[6].reason
    assert json.loads(by_line[3].to_json()) == {"line": 3, "id": "neg", "field": "frames",
                                                "reason": by_line[3].reason}


def test_csv_with_a_byte_order_mark_and_empty_cells():
    data = "\ufeffid,prompt,seed,steps\nc1,a red square moving up,4,\nc2,,5,8\nc3,a cyan triangle,x,\n".encode()
    rows, errors = parse_manifest(data, "csv")
    assert [(r.line, r.row.id, r.row.seed, r.row.steps) for r in rows] == [(2, "c1", 4, None)]
    assert {(e.line, e.field) for e in errors} == {(3, "prompt"), (4, "seed")}


def test_seeds_derive_stably_and_formats_come_from_the_name():
    assert derive_seed(0, "a1") == derive_seed(0, "a1") != derive_seed(1, "a1")
    assert 0 <= derive_seed(7, "x") < 2**31
    assert derive_seed(0, "a1") == 796042107  # = sha256("0:a1")[:4] & 0x7FFFFFFF; must never change
    assert manifest_format("prompts.JSONL") == "jsonl" and manifest_format("p.csv") == "csv"
    with pytest.raises(ValueError, match=r"\.jsonl .* or \.csv"):
        manifest_format("prompts.txt")
    with pytest.raises(ValueError, match="not UTF-8"):
        parse_manifest(b"\xff\xfe\x00bad", "jsonl")


def test_hostile_rows_are_row_errors_and_the_rest_still_parse():
    good = {"id": "good", "prompt": "a red square moving up"}
    data = _jsonl(
        '{"id": "bigint", "prompt": "x", "seed": ' + "9" * 4301 + "}",  # over Python's int-conversion limit
        '{"id": "deep", "prompt": "x", "tier": ' + "[" * 100_000 + "]" * 100_000 + "}",  # RecursionError
        '{"id": "twice", "prompt": "x", "prompt": "y"}',  # a duplicate key is not "last wins"
        {"id": "sep", "prompt": "a red square\u2028moving up\u0085now"},  # separators inside a JSON string
        good)
    rows, errors = parse_manifest(data, "jsonl")
    assert [(r.line, r.row.id) for r in rows] == [(4, "sep"), (5, "good")]
    assert rows[0].row.prompt == "a red square\u2028moving up\u0085now"
    by_line = {e.line: e.reason for e in errors}
    assert set(by_line) == {1, 2, 3}
    assert "digits" in by_line[1] and "nested too deeply" in by_line[2] and "'prompt' appears twice" in by_line[3]


def test_a_csv_cell_over_the_field_limit_fails_its_row_only():
    data = ("id,prompt\nok1,a red square\nhuge," + "x" * 200_000 + "\nok2,a blue circle\n").encode()
    rows, errors = parse_manifest(data, "csv")
    assert [r.row.id for r in rows] == ["ok1", "ok2"]
    assert [(e.line, e.reason.split(":")[0]) for e in errors] == [(3, "not a usable CSV row")]


def test_ids_that_collide_on_common_filesystems_are_refused():
    rows, errors = parse_manifest(_jsonl({"id": "Clip", "prompt": "x"}, {"id": "clip", "prompt": "y"},
                                         {"id": "CON", "prompt": "x"}, {"id": "nul.mp4", "prompt": "x"},
                                         {"id": "console", "prompt": "x"}), "jsonl")
    assert [r.row.id for r in rows] == ["console"]
    assert [(e.line, e.field) for e in errors] == [(1, "id"), (2, "id"), (3, "id"), (4, "id")]
    assert "differ only by case" in errors[0].reason and "reserved file name on Windows" in errors[2].reason


def test_a_csv_header_naming_a_column_twice_is_refused_whole():
    rows, errors = parse_manifest(b"id,prompt,prompt\na,x,y\n", "csv")
    assert rows == [] and [(e.line, e.reason) for e in errors] == [
        (1, "the header names the column(s) 'prompt' more than once")]
