"""An ASGI middleware that refuses request bodies over a size limit with 413."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class BodyLimit:
    """Answer 413 to a request body over the limit: by its Content-Length before anything reads it, or, for a
    chunked body, once the bytes received pass the limit (the route's own answer to the cut body is dropped).

    A plain ASGI middleware: Starlette's `@app.middleware("http")` wraps every request in extra tasks and streams
    (measured: the trivial request's p50 1.4x a bare Serve app with it, see docs/BENCHMARKS.md).
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = JSONResponse({"detail": [{"loc": ["body"], "msg": f"request body over {self.max_bytes} bytes"}]},
                                 status_code=413)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            return await too_large(scope, receive, send)
        seen = {"bytes": 0, "over": False}

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > self.max_bytes:
                    seen["over"] = True
                    return {"type": "http.request", "body": b"", "more_body": False}  # read no further
            return message

        async def guarded_send(message):
            if not seen["over"]:
                await send(message)

        await self.app(scope, counted_receive, guarded_send)
        if seen["over"]:
            await too_large(scope, receive, send)
