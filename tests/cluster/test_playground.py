"""The playground page without a cluster: served at / without a key while every /v1 route still needs one, under a
Content-Security-Policy that allows the shipped file's own style and script and nothing from elsewhere."""

import hashlib
import re
from html.parser import HTMLParser

import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.testclient import TestClient

from cluster.auth import BearerAuth
from cluster.callers import SingleCaller
from cluster.playground import csp_hash, playground_page

TOKEN = "s3cret"


class _Inline(HTMLParser):
    def __init__(self, tag: str):
        super().__init__()
        self.tag, self.inside, self.texts = tag, False, []

    def handle_starttag(self, tag, attrs):
        if tag == self.tag:
            self.inside = True
            self.texts.append("")

    def handle_endtag(self, tag):
        self.inside = self.inside and tag != self.tag

    def handle_data(self, data):
        if self.inside:
            self.texts[-1] += data


def inline(html: str, tag: str) -> str:
    """The text of the page's one `<tag>` element as a browser's parser reads it (comments are not elements)."""
    parser = _Inline(tag)
    parser.feed(html)
    assert len(parser.texts) == 1, parser.texts
    return parser.texts[0]


def directives(policy: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


def test_the_policy_allows_exactly_the_pages_own_style_and_script():
    shipped = playground_page()
    html = shipped.html.decode()
    policy = directives(shipped.headers["Content-Security-Policy"])
    script, style = inline(html, "script"), inline(html, "style")
    assert policy["script-src"] == csp_hash(script) and policy["style-src"] == csp_hash(style)
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    assert policy["media-src"] == "blob:" and policy["frame-ancestors"] == "'none'"
    assert csp_hash("") == "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"  # the CSP spec's own example
    assert shipped.headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_loads_nothing_from_elsewhere_and_never_writes_api_text_as_html():
    html = playground_page().html.decode()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "http://" not in html and "https://" not in html
    assert "innerHTML" not in html and "outerHTML" not in html and "insertAdjacentHTML" not in html
    assert "localStorage" not in html and "sessionStorage.setItem" in html  # the key lives in the tab only


@pytest.mark.parametrize("root_path", ["", "/vidgen"])
def test_the_page_is_served_without_a_key_and_every_v1_route_still_needs_one(root_path):
    app = FastAPI()

    @app.get("/")
    async def playground():
        shipped = playground_page()
        return Response(shipped.html, media_type="text/html", headers=shipped.headers)

    @app.get("/v1/models")
    async def models():
        return {"data": ["the tiers"]}

    app.add_middleware(BearerAuth, callers=lambda: SingleCaller(hashlib.sha256(TOKEN.encode()).hexdigest()))
    client = TestClient(app, root_path=root_path)
    served = client.get(f"{root_path}/")
    assert served.status_code == 200 and "<title>vidgen playground</title>" in served.text
    assert client.get(f"{root_path}/v1/models").status_code == 401
    assert client.post(f"{root_path}/").status_code == 405  # public to read, nothing to post to
    keyed = client.get(f"{root_path}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"})
    assert keyed.status_code == 200
