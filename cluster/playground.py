"""The playground page the router serves at `GET /`: one HTML file (`playground.html`, package data) whose plain JS
calls the Videos API with the key a person enters (kept in the tab's sessionStorage only).

The page holds no data, so it is served without a key (`cluster.auth.PUBLIC_PATHS`); every `/v1` call it makes
sends the caller's own. Its Content-Security-Policy allows nothing but this file's one inline <style> and one
inline <script> (by their sha256, computed here from the file as shipped), requests to this origin, and videos from
the blob URLs the script makes: text an attacker puts in a prompt can neither run nor load anything.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

PAGE_FILE = "playground.html"


@dataclass(frozen=True)
class Page:
    html: bytes
    headers: dict[str, str]


def _inline(html: str, tag: str) -> str:
    """The text of the file's one inline `<tag>` element, exactly as the browser hashes it."""
    uncommented = re.sub(r"<!--.*?-->", "", html, flags=re.DOTALL)  # a comment may name the tags
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", uncommented, flags=re.DOTALL)
    if len(found) != 1:
        raise ValueError(f"{PAGE_FILE}: expected one inline <{tag}>, found {len(found)}; keep the page's CSS and JS "
                         "in one element each")
    return found[0]


def csp_hash(text: str) -> str:
    """A CSP source expression allowing exactly this inline text: 'sha256-<base64>'."""
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


def content_security_policy(html: str) -> str:
    return "; ".join([
        "default-src 'none'",
        f"script-src {csp_hash(_inline(html, 'script'))}",
        f"style-src {csp_hash(_inline(html, 'style'))}",
        "connect-src 'self'",  # the Videos API, beside the page
        "media-src blob:",  # the player plays what the script fetched with the caller's key
        "img-src data:",  # the empty favicon (a request for /favicon.ico would be a 401 in the console)
        "base-uri 'none'",
        "form-action 'none'",  # the forms are handled by the script, never submitted
        "frame-ancestors 'none'",
    ])


@cache
def playground_page() -> Page:
    """The page and its response headers, read from the package once per process."""
    html = (resources.files("cluster") / PAGE_FILE).read_text(encoding="utf-8")
    headers = {"Content-Security-Policy": content_security_policy(html), "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}
    return Page(html.encode(), headers)
