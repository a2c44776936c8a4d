"""The bearer check runs before anything reads the body and fails closed, whatever prefix the app is mounted at; with
a keys file, each token is recorded as its own caller."""

import hashlib

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from cluster.auth import BearerAuth, caller_of, callers_for
from cluster.callers import KeysFileCallers, SingleCaller
from cluster.serve_config import AuthConfig

TOKEN = "s3cret"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _client(root_path: str, callers=None) -> tuple[TestClient, list]:
    app, bodies = FastAPI(), []

    @app.post("/v1/videos")
    async def videos(request: Request):
        bodies.append(await request.body())
        return {"ok": True, "caller": caller_of(request)}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/v2/new-route")
    async def new_route():
        return {"secret": "data"}

    callers = callers or SingleCaller(sha(TOKEN))
    app.add_middleware(BearerAuth, callers=lambda: callers)
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
    assert ok.status_code == 200 and bodies == [b"{}"] and ok.json()["caller"] == "default"


def test_with_a_keys_file_each_token_is_its_own_caller(tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"keys: {{alice: {{token_sha256: {sha('alice-token')}}}, bob: {{token_sha256: {sha('bob')}}}}}")
    cfg = AuthConfig(keys_file=str(keys))
    callers = callers_for(cfg, {"VIDGEN_SERVE_TOKEN": TOKEN})  # the keys replace the one token
    assert isinstance(callers, KeysFileCallers)
    client, bodies = _client("", callers)
    as_alice = client.post("/v1/videos", content=b"{}", headers={"Authorization": "Bearer alice-token"})
    as_bob = client.post("/v1/videos", content=b"{}", headers={"Authorization": "bearer bob"})
    assert (as_alice.json()["caller"], as_bob.json()["caller"]) == ("alice", "bob")
    assert client.post("/v1/videos", content=b"{}", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    assert len(bodies) == 2
    with pytest.raises(ValueError, match="keys_file and token_sha256 both set"):
        AuthConfig(keys_file=str(keys), token_sha256=sha(TOKEN))
