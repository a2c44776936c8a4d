"""Bearer-token auth for the HTTP API: only the token's sha256 is shipped to the cluster and compared.

`BearerAuth` checks the `Authorization` header of every request but a few public paths before anything reads its
body, so a caller without the token gets 401 (in OpenAI's error envelope, which the SDK raises as
`AuthenticationError`) whatever it sends, and cannot make the router parse, validate or wait for a body. It records
who the caller is (`caller_of`): the renders a caller makes are its own (`cluster.async_renders` keeps the owner).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from starlette.requests import Request

from cluster.serve_config import AuthConfig
from cluster.videos_api import api_error

# The one caller a single configured token stands for; the owner of every render made with it.
DEFAULT_CALLER = "default"


def token_digest(auth: AuthConfig, environ: dict[str, str], insecure_local: bool = False) -> str | None:
    """The sha256 a presented token must match; None only when serving without auth was asked for."""
    if auth.token_sha256:
        return auth.token_sha256
    token = environ.get(auth.token_env)
    if token:
        return hashlib.sha256(token.encode()).hexdigest()
    if insecure_local:
        return None
    raise RuntimeError(f"no bearer token configured: set {auth.token_env} where the router runs, or write "
                       "auth.token_sha256 in the serve config, or serve on loopback with --insecure-local")


def token_matches(presented: str | None, digest: str | None) -> bool:
    """Whether a presented token (None: none sent) hashes to `digest`, in constant time; always with no digest."""
    if digest is None:
        return True
    presented_digest = hashlib.sha256(presented.encode()).hexdigest() if presented else ""
    return hmac.compare_digest(presented_digest, digest)


PUBLIC_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def route_path(scope) -> str:
    """The path the app routes on: Serve mounts an app under its `route_prefix` by setting `root_path` and keeping
    the full path, so the prefix must come off (as Starlette's router does)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] or "/" if root and path.startswith(root) else path


class BearerAuth:
    """ASGI middleware: 401 for a request to anything but `PUBLIC_PATHS` without the token whose sha256 `digest()`
    gives (None: serving without auth). Fails closed: a route added later is protected unless made public here."""

    def __init__(self, app, digest: Callable[[], str | None]):
        self.app, self.digest = app, digest

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            scope.setdefault("state", {})["caller"] = DEFAULT_CALLER
        if scope["type"] == "http" and route_path(scope) not in PUBLIC_PATHS:
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            scheme, _, token = header.partition(" ")
            if not token_matches(token.strip() if scheme.lower() == "bearer" else None, self.digest()):
                refusal = api_error(401, "missing or wrong bearer token: send Authorization: Bearer <token>",
                                    code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                return await refusal(scope, receive, send)
        return await self.app(scope, receive, send)


def caller_of(request: Request) -> str:
    """Who sent `request`, as `BearerAuth` recorded it."""
    return request.state.caller
