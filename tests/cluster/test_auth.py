"""The bearer check runs before anything reads the body and fails closed, whatever prefix the app is mounted at."""

import hashlib

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from cluster.auth import BearerAuth

TOKEN = "s3cret"


def _client(root_path: str) -> tuple[TestClient, list]:
    app, bodies = FastAPI(), []

    @app.post("/v1/videos")
    async def videos(request: Request):
        bodies.append(await request.body())
        return {"ok": True}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/v2/new-route")
    async def new_route():
        return {"secret": "data"}

    app.add_middleware(BearerAuth, digest=lambda: hashlib.sha256(TOKEN.encode()).hexdigest())
    return TestClient(app, root_path=root_path), bodies


@pytest.mark.parametrize("prefix", ["", "/vidgen"])
def test_every_path_but_the_public_ones_needs_the_token(prefix):
    client, bodies = _client(prefix)
    assert client.post(f"{prefix}/v1/videos", content=b"{").status_code == 401
    assert client.post(f"{prefix}/v1/videos", content=b"{", headers={"Authorization": "Bearer wrong"}).status_code \
        == 401
    assert client.get(f"{prefix}/v2/new-route").status_code == 401  # a route added later is protected too
    refusal = client.get(f"{prefix}/v2/new-route").json()["error"]  # OpenAI's envelope: the SDK's AuthenticationError
    assert refusal["type"] == "authentication_error" and refusal["code"] == "invalid_api_key"
    assert bodies == []  # no unauthenticated body was read
    assert client.get(f"{prefix}/healthz").status_code == 200
    ok = client.post(f"{prefix}/v1/videos", content=b"{}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and bodies == [b"{}"]
