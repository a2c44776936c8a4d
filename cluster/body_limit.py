"""An ASGI middleware that reads a request's body whole, within a size limit and a deadline, before the app sees it.

Request bodies here are small JSON objects, so buffering costs nothing, and it means the app never starts on a
body that is cut short: over the limit (by Content-Length, or counted as a chunked body arrives) the answer is 413,
and a body that has not arrived by the deadline (a client trickling bytes to hold a connection) gets 408; in both
cases the route never runs.

A plain ASGI middleware: Starlette's `@app.middleware("http")` wraps every request in extra tasks and streams
(measured: the trivial request's p50 1.4x a bare Serve app with it, see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi.responses import JSONResponse

from cluster.videos_api import api_error


class BodyLimit:
    def __init__(self, app, max_bytes: int, timeout_s: Callable[[], float]):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    def _refuse(self, status: int, msg: str) -> JSONResponse:
        return api_error(status, msg, code="body_too_large" if status == 413 else "body_timeout")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"0")
        if length == b"0" and b"transfer-encoding" not in headers:
            # No body (HTTP/1.1: only Content-Length or Transfer-Encoding announce one), nothing to wait for: under
            # Serve each ASGI message is fetched from the proxy by an actor call, and awaiting that first message
            # cost a GET ~3 ms (benchmarks/serve.py (b))
            return await self.app(scope, receive, send)
        if not length.isdigit() or int(length) > self.max_bytes:
            return await self._refuse(413, f"request body over {self.max_bytes} bytes")(scope, receive, send)
        timeout_s = self.timeout_s()
        deadline = asyncio.get_running_loop().time() + timeout_s
        body, more = bytearray(), True
        while more:
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                return await self._refuse(408, f"request body not received within {timeout_s:g} s")(
                    scope, receive, send)
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._refuse(413, f"request body over {self.max_bytes} bytes")(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:  # the body was handed over; the app may wait for a disconnect
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)
