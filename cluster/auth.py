"""Bearer-token auth for the HTTP API: only tokens' sha256 are shipped to the cluster and compared.

`BearerAuth` checks the `Authorization` header of every request but a few public paths before anything reads its
body, so a caller without a known token gets 401 (in OpenAI's error envelope, which the SDK raises as
`AuthenticationError`) whatever it sends, and cannot make the router parse, validate or wait for a body. It records
who the caller is (`caller_of`: the key id of a keys file, or `default` for the single token; `cluster.callers`):
the renders a caller makes are its own (`cluster.async_renders` keeps the owner).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from starlette.requests import Request

from cluster.callers import DEFAULT_CALLER, Callers, KeysFileCallers, SingleCaller
from cluster.serve_config import AuthConfig
from cluster.videos_api import api_error


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
                       "auth.token_sha256 (or auth.keys_file) in the serve config, or serve on loopback with "
                       "--insecure-local")


def callers_for(auth: AuthConfig, environ: dict[str, str], insecure_local: bool = False) -> Callers | None:
    """The callers a deployment serves: the keys of `auth.keys_file`, else the one token (`token_digest`); None only
    when serving without auth was asked for."""
    if auth.keys_file:
        return KeysFileCallers(auth.keys_file)
    digest = token_digest(auth, environ, insecure_local)
    return SingleCaller(digest) if digest is not None else None


# "/": the playground page, which holds no data (cluster.playground); its calls send the caller's key
PUBLIC_PATHS = frozenset({"/", "/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def route_path(scope) -> str:
    """The path the app routes on: Serve mounts an app under its `route_prefix` by setting `root_path` and keeping
    the full path, so the prefix must come off (as Starlette's router does)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] or "/" if root and path.startswith(root) else path


class BearerAuth:
    """ASGI middleware: 401 for a request to anything but `PUBLIC_PATHS` without a token `callers()` knows (None:
    serving without auth, everyone is `default`); the caller it identifies is recorded for the routes. Fails closed:
    a route added later is protected unless made public here."""

    def __init__(self, app, callers: Callable[[], Callers | None]):
        self.app, self.callers = app, callers

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        callers, caller = self.callers(), DEFAULT_CALLER
        if callers is not None and route_path(scope) not in PUBLIC_PATHS:
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            scheme, _, token = header.partition(" ")
            caller = callers.identify(token.strip() if scheme.lower() == "bearer" else None)
            if caller is None:
                refusal = api_error(401, "missing or wrong bearer token: send Authorization: Bearer <token>",
                                    code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                return await refusal(scope, receive, send)
        scope.setdefault("state", {})["caller"] = caller
        return await self.app(scope, receive, send)


def caller_of(request: Request) -> str:
    """Who sent `request`, as `BearerAuth` recorded it."""
    return request.state.caller
