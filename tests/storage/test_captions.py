"""A captions file is untrusted: one monstrous cell is that row's error, never the end of the ingest."""

from storage.captions import parse_captions

GIANT = "x" * (200 * 1024)  # over the csv module's 128 KiB field limit


def test_a_giant_csv_cell_is_its_rows_error_and_the_other_rows_are_read():
    csv = (f"path,caption,licence\na.mp4,a cat,mit\nbig.mp4,{GIANT},mit\nb.mp4,a dog,mit\n"
           f'quoted.mp4,"{GIANT}\nstill the caption\n{GIANT}",mit\nc.mp4,a bird,mit\n').encode()
    rows, errors = parse_captions(csv, "csv")
    assert sorted(rows) == ["a.mp4", "b.mp4", "c.mp4"]
    assert rows["c.mp4"].caption == "a bird" and rows["c.mp4"].line == 8
    assert [(e.line, e.path) for e in errors] == [(3, "big.mp4"), (5, "quoted.mp4")]
    assert all("unreadable CSV record (field larger than field limit" in e.reason for e in errors)


def test_a_giant_jsonl_caption_is_its_rows_error():
    jsonl = (b'{"path": "a.mp4", "caption": "a cat", "licence": "mit"}\n'
             b'{"path": "big.mp4", "caption": "' + GIANT.encode() + b'", "licence": "mit"}\n')
    rows, errors = parse_captions(jsonl, "jsonl")
    assert list(rows) == ["a.mp4"] and [(e.line, e.path) for e in errors] == [(2, "big.mp4")]
