"""`vidgen render --report`: OUT/report.html, one page a person opens to look at a bulk render.

Every rendered row (each record of results.jsonl: the rows this run rendered and those done before) with its video
playing inline (a relative link to OUT/videos/<id>.mp4, so the page works wherever OUT is opened or copied whole),
its prompt, seed, settings and the sampling seconds it cost; then every row not rendered (errors.jsonl: bad
manifest rows and failed renders) with its line, field and reason. The page is self-contained (inline CSS, no
script, nothing from elsewhere) and every text in it is escaped: prompts and ids are the manifest author's input.
Its Content-Security-Policy lets it play videos beside it and nothing else, should escaping ever miss something.
"""

from __future__ import annotations

import html
from urllib.parse import quote

from storage.render_ledger import RenderLedger

REPORT = "report.html"
POLICY = "default-src 'none'; media-src 'self'; img-src data:; style-src 'unsafe-inline'"  # no script at all

STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 72rem; padding: 1rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
dl.run { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; font-size: 0.9rem; }
dl.run dt { color: #666; } dl.run dd { margin: 0; }
.clips { display: grid; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr)); gap: 1rem; }
figure { margin: 0; border: 1px solid #ddd; border-radius: 4px; padding: 0.5rem; }
video { width: 100%; background: #000; image-rendering: pixelated; }
figcaption .prompt { font-weight: 600; } figcaption .negative { color: #a00; }
figcaption .facts { color: #555; font-size: 0.85rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { text-align: left; padding: 0.3rem 0.5rem; border-bottom: 1px solid #ddd; vertical-align: top; }
"""


def _text(value) -> str:
    """Any value as HTML text (quotes escaped too, so it is safe in an attribute as well)."""
    return html.escape("" if value is None else str(value), quote=True)


def _settings(record: dict) -> str:
    size = f"{record.get('frames')} frames of {record.get('width')}x{record.get('height')}"
    parts = [size, f"{record.get('steps')} steps", f"guidance {record.get('guidance')}"]
    if "steps_skipped" in record:
        parts.append(f"{record['steps_full']} steps in full, {record['steps_skipped']} cached")
    return ", ".join(parts)


def _clip(record: dict) -> str:
    """One rendered row: its video (a relative, percent-encoded link to its MP4) and what made it."""
    negative = record.get("negative_prompt")
    return (
        f'<figure id="row-{_text(record["id"])}" data-id="{_text(record["id"])}">'
        f'<video controls loop muted preload="metadata" src="{_text(quote(record["key"]))}"></video>'
        f'<figcaption><div class="prompt">{_text(record.get("prompt"))}</div>'
        + (f'<div class="negative">not: {_text(negative)}</div>' if negative else "")
        + f'<div class="facts">{_text(record["id"])} · seed {_text(record.get("seed"))} · '
        f'{_text(_settings(record))} · sampled in {_text(record.get("seconds"))} s</div>'
        "</figcaption></figure>")


def _not_rendered(errors: list[dict]) -> str:
    if not errors:
        return "<p>Every row was rendered.</p>"
    rows = "".join(f'<tr><td>{_text(e.get("line"))}</td><td>{_text(e.get("id"))}</td><td>{_text(e.get("field"))}'
                   f'</td><td>{_text(e.get("reason"))}</td></tr>' for e in errors)
    return (f'<table id="not-rendered"><thead><tr><th>Line</th><th>Id</th><th>Field</th><th>Why</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _run(summary: dict) -> str:
    facts = [("model", summary.get("model")), ("manifest", summary.get("manifest")), ("rows", summary.get("rows")),
             ("rendered now", summary.get("rendered_now")), ("done before", summary.get("already_done")),
             ("not rendered", summary.get("errors")), ("started", summary.get("started")),
             ("finished", summary.get("finished"))]
    return '<dl class="run">' + "".join(f"<dt>{_text(k)}</dt><dd>{_text(v)}</dd>" for k, v in facts) + "</dl>"


def report_html(records: list[dict], errors: list[dict], summary: dict) -> str:
    """The report page of a render: `records` as results.jsonl holds them, `errors` as errors.jsonl does, `summary`
    as run.json does."""
    clips = "".join(_clip(r) for r in records) or "<p>No row has been rendered.</p>"
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>vidgen render report</title><style>{STYLE}</style></head><body>"
        f"<h1>vidgen render report</h1>{_run(summary)}"
        f'<h2>Rendered ({len(records)})</h2><div class="clips" id="rendered">{clips}</div>'
        f"<h2>Not rendered ({len(errors)})</h2>{_not_rendered(errors)}"
        "</body></html>\n")


def write_report(ledger: RenderLedger, records: list[dict], errors: list[dict], summary: dict) -> str:
    """Write OUT/report.html; its URI."""
    location = ledger.out.join(REPORT)
    ledger.store.write(location, report_html(records, errors, summary).encode())
    return location.uri
