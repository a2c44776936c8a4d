"""`vidgen render --report`: the page written in-process (escaped, every row rendered and not), and a real render's
report opened in headless Chromium, its videos playing."""

import json
from html.parser import HTMLParser

import pytest

from jobs.render_report import POLICY, REPORT, report_html, write_report
from storage.objectstore import ObjectStore
from storage.render_ledger import RenderLedger

HOSTILE = '<script>alert("x")</script> & a red square'


def record(row_id: str, prompt: str, **extra) -> dict:
    """A record as results.jsonl holds it."""
    return {"id": row_id, "key": f"videos/{row_id}.mp4", "sha256": "0" * 64, "seconds": 0.25, "model": "m",
            "request": "r", "prompt": prompt, "negative_prompt": None, "seed": 7, "frames": 8, "height": 32,
            "width": 32, "steps": 2, "guidance": 3.0, **extra}


class Page(HTMLParser):
    """What a browser would build: the elements by tag (with attributes) and the text, script never run."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict]:
        return [attrs for t, attrs in self.tags if t == tag]


def test_every_text_is_escaped_and_videos_link_relative_to_the_page():
    records = [record("clip-01", HOSTILE, negative_prompt='"><img src=x onerror=alert(1)>'),
               record("clip 02", "a blue circle", steps_full=1, steps_skipped=1)]
    page = report_html(records, [], {"model": "<b>model</b>", "rows": 2})
    parsed = Page(page)
    assert not parsed.all("script") and not parsed.all("img")  # the hostile text stayed text
    assert HOSTILE in "".join(parsed.text) and "<b>model</b>" in "".join(parsed.text)
    assert [v["src"] for v in parsed.all("video")] == ["videos/clip-01.mp4", "videos/clip%2002.mp4"]
    assert [f["data-id"] for f in parsed.all("figure")] == ["clip-01", "clip 02"]
    assert "1 steps in full, 1 cached" in page and "seed 7" in page and "sampled in 0.25 s" in page
    assert parsed.all("meta")[1]["content"] == POLICY and "script-src" not in POLICY  # no script, ever


def test_rows_not_rendered_are_listed_with_their_reasons():
    errors = [{"line": 3, "id": "no-prompt", "field": "prompt", "reason": "Field required"},
              {"line": 9, "id": None, "field": None, "reason": "not JSON: <unexpected> end"},
              {"line": 12, "id": "big", "field": "frames", "reason": "16 cannot be made; the model makes 8"}]
    parsed = Page(report_html([record("a", "a red square")], errors, {}))
    cells = [t.strip() for t in parsed.text if t.strip()]
    start = cells.index("Why") + 1
    assert cells[start:] == ["3", "no-prompt", "prompt", "Field required", "9", "not JSON: <unexpected> end",
                             "12", "big", "frames", "16 cannot be made; the model makes 8"]
    assert "Not rendered (3)" in cells and "Rendered (1)" in cells
    assert "Every row was rendered." in report_html([], [], {})


def test_the_report_is_written_into_out_and_its_uri_returned(tmp_path):
    ledger = RenderLedger(ObjectStore(), str(tmp_path / "out"))
    uri = write_report(ledger, [record("a", "a red square")], [], {"rows": 1})
    assert uri == (tmp_path / "out" / REPORT).as_uri()
    assert 'src="videos/a.mp4"' in (tmp_path / "out" / REPORT).read_text()


@pytest.mark.slow
def test_a_rendered_manifests_report_shows_every_row_playing_in_a_browser(ray_cluster, micro_model_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from typer.testing import CliRunner

    from tests.browser import chromium, console_errors, video_duration
    from vidgen.cli import app

    folder, _ = micro_model_dir
    good = [{"id": f"clip-{i}", "prompt": p} for i, p in enumerate(
        ["a red square moving right", "a green circle moving down", "a blue triangle moving left"])]
    good.append({"id": "clip-3", "prompt": "a red square moving up <b>not bold</b>", "seed": 5})
    bad = [{"id": "too-long", "prompt": "a red square", "frames": 16}, {"id": "no-prompt"}]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in good + bad))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["render", str(manifest), "--model", str(folder), "--out", str(out),
                                      "--steps", "2", "--report"])
    assert result.exit_code == 2, result.output  # the two bad rows
    report = out / REPORT
    assert f"report: {report.as_uri()}" in result.output
    with chromium() as driver:
        driver.get(report.as_uri())
        figures = driver.find_elements(By.CSS_SELECTOR, "#rendered figure")
        assert [f.get_attribute("data-id") for f in figures] == [r["id"] for r in good]
        assert good[3]["prompt"] in figures[3].text  # shown as the text it is
        durations = [video_duration(driver, f.find_element(By.TAG_NAME, "video")) for f in figures]
        assert all(isinstance(d, float) and d == pytest.approx(1.0, abs=0.2) for d in durations), durations
        not_rendered = driver.find_elements(By.CSS_SELECTOR, "#not-rendered tbody tr")
        assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in not_rendered] == ["too-long", "no-prompt"]
        assert console_errors(driver) == []
