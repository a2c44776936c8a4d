"""The body-limit middleware in process: a request without a body reaches the app without waiting for a message
(under Serve each one is an actor call to the proxy), one with a body reaches it whole."""

import asyncio

from cluster.body_limit import BodyLimit


async def _answered(scope: dict, messages: list[dict]) -> dict:
    """What the app behind BodyLimit saw: {"ran": True, "body": bytes}, or the refusal's status."""
    seen: dict = {}
    sent: list[dict] = []

    async def app(scope, receive, send):
        seen["ran"] = True
        if scope["method"] == "POST":
            seen["body"] = (await receive())["body"]

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # a client that never sends: the proxy's message never comes

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(BodyLimit(app, max_bytes=64, timeout_s=lambda: 30.0)(scope, receive, send), 5)
    return seen if seen else {"status": sent[0]["status"]}


def _scope(method: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http", "method": method, "path": "/v1/videos", "headers": headers}


def test_a_request_without_a_body_reaches_the_app_without_waiting_for_a_message():
    assert asyncio.run(_answered(_scope("GET", []), [])) == {"ran": True}
    assert asyncio.run(_answered(_scope("DELETE", [(b"content-length", b"0")]), [])) == {"ran": True}


def test_a_body_reaches_the_app_whole_and_an_oversized_one_is_refused():
    parts = [{"type": "http.request", "body": b'{"prompt": ', "more_body": True},
             {"type": "http.request", "body": b'"a"}', "more_body": False}]
    chunked = _scope("POST", [(b"transfer-encoding", b"chunked")])
    assert asyncio.run(_answered(chunked, list(parts))) == {"ran": True, "body": b'{"prompt": "a"}'}
    too_long = [{"type": "http.request", "body": b"x" * 65, "more_body": False}]
    assert asyncio.run(_answered(chunked, too_long)) == {"status": 413}
