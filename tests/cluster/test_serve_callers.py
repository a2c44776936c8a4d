"""Several callers and per-request adapters through `vidgen serve up` on the session's Ray cluster: each key sees only
its own videos (404 for another's, never 403), a key over its create rate or its renders at once gets 429 with when
to retry, renders are gone from their `expires_at`, and a create's `lora` renders with that adapter on the tier that
serves it, or is refused with 400 naming the adapters served or both base digests."""

import hashlib
import time

import pytest
import requests

from tests.lora_adapters import make_adapter
from tests.serving import PROMPT, deployed, wait_for

pytestmark = pytest.mark.slow

KEYS = {"alice": "alice-token", "bob": "bob-token", "carol": "carol-token", "dave": "dave-token"}
RETENTION_S = 30  # long enough for every render here to end, short enough to wait for
sdk_warnings = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {KEYS[key]}"}


@pytest.fixture(scope="module")
def server(ray_cluster, tiny_pipelines, tmp_path_factory):
    """edge: the shipped vidgen model; cloud: a tiny Wan pipeline serving the adapter `ink` (made for it) and
    `stranger` (made for another Wan), one loaded at a time. Four keys: carol may create 2 a minute, dave may have
    one render at once."""
    from examples.tiny_pipelines import save_tiny_pipeline
    from vidgen.pipelines.references import model_digest, verify_model

    tmp = tmp_path_factory.mktemp("serve-callers")
    other_wan = save_tiny_pipeline("wan", tmp / "other-wan", seed=1)
    ink = make_adapter(tmp / "ink", tiny_pipelines["wan"], seed=1)
    stranger = make_adapter(tmp / "stranger", other_wan, seed=2)
    digests = {name: model_digest(verify_model(str(folder)).sums)[:12]
               for name, folder in (("served", tiny_pipelines["wan"]), ("other", other_wan))}
    keys = tmp / "keys.yaml"
    limits = {"carol": "{creates_per_minute: 2}", "dave": "{max_concurrent_renders: 1}"}
    keys.write_text("keys:\n" + "".join(
        f"  {key}: {{token_sha256: {hashlib.sha256(token.encode()).hexdigest()}"
        f"{', limits: ' + limits[key] if key in limits else ''}}}\n" for key, token in KEYS.items()))
    args = {
        "renders_uri": str(tmp / "renders"), "renders_retention_s": RETENTION_S, "auth": {"keys_file": str(keys)},
        "tiers": {
            "edge": {"steps": 2, "cost_per_clip": 1, "num_cpus": 0.5, "resources": {"edge": 1},
                     "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
            "cloud": {"model": str(tiny_pipelines["wan"]), "steps": 2, "frames": 5, "height": 32, "width": 32,
                      "cost_per_clip": 10, "num_cpus": 0.5, "resources": {"cloud": 1}, "max_loras": 1,
                      "loras": {"ink": str(ink), "stranger": str(stranger)},
                      "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        },
    }
    with deployed(tmp, args) as (base, _):
        yield base, tmp / "renders", digests


def create(base: str, key: str, **body) -> requests.Response:
    return requests.post(f"{base}/v1/videos", json={"prompt": PROMPT, **body}, headers=auth(key), timeout=30)


def ended(base: str, key: str, video_id: str) -> dict:
    def done():
        video = requests.get(f"{base}/v1/videos/{video_id}", headers=auth(key), timeout=10).json()
        return video if video["status"] in ("completed", "failed") else None

    return wait_for(done, 60, f"video {video_id} to end")


@sdk_warnings
def test_a_key_sees_only_its_own_videos(server):
    import openai

    base, _, _ = server
    made = create(base, "alice", quality="draft")
    assert made.status_code == 200, made.text
    video_id = made.json()["id"]
    assert ended(base, "alice", video_id)["status"] == "completed"
    for method, path in (("get", ""), ("get", "/content"), ("delete", "")):
        theirs = requests.request(method, f"{base}/v1/videos/{video_id}{path}", headers=auth("bob"), timeout=10)
        assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "video_not_found", (method, path)
    listed = requests.get(f"{base}/v1/videos?limit=100", headers=auth("bob"), timeout=10).json()
    assert video_id not in [v["id"] for v in listed["data"]]
    bob = openai.OpenAI(base_url=f"{base}/v1", api_key=KEYS["bob"], max_retries=0, timeout=30)
    with pytest.raises(openai.NotFoundError):
        bob.videos.retrieve(video_id)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="no-such-key", max_retries=0).videos.retrieve(video_id)
    mine = requests.get(f"{base}/v1/videos/{video_id}/content", headers=auth("alice"), timeout=10)
    assert mine.status_code == 200 and mine.headers["content-type"] == "video/mp4"  # still there for its owner


def test_a_key_over_its_create_rate_is_told_when_to_retry(server):
    base, _, _ = server
    first, second, third = (create(base, "carol", quality="draft") for _ in range(3))
    assert first.status_code == second.status_code == 200  # a minute's worth at once
    assert third.status_code == 429, third.text
    assert third.json()["error"]["code"] == "rate_limit_exceeded"
    assert 0 < int(third.headers["retry-after-ms"]) <= 30_000 and 1 <= int(third.headers["Retry-After"]) <= 30
    other = create(base, "dave", quality="draft")
    assert other.status_code == 200  # another key is not held back by carol
    ended(base, "dave", other.json()["id"])


def test_a_key_at_its_renders_at_once_waits_for_one_to_end(server):
    base, _, _ = server
    slow = create(base, "dave", model="cloud", steps=40)  # one render at once: this one holds dave's slot
    assert slow.status_code == 200, slow.text
    refused = create(base, "dave", quality="draft")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "concurrency_limit_exceeded"
    assert int(refused.headers["Retry-After"]) >= 1
    ended(base, "dave", slow.json()["id"])
    again = wait_for(lambda: (r := create(base, "dave", quality="draft")).status_code == 200 and r, 10,
                     "dave's slot to be given back")
    assert ended(base, "dave", again.json()["id"])["status"] == "completed"


def test_a_render_is_gone_from_its_expires_at(server):
    base, renders, _ = server
    video = create(base, "bob", quality="draft").json()
    assert ended(base, "bob", video["id"])["status"] == "completed"
    assert video["expires_at"] == video["created_at"] + RETENTION_S
    wait_for(lambda: time.time() >= video["expires_at"] + 1, RETENTION_S + 5, "the render to expire")
    assert requests.get(f"{base}/v1/videos/{video['id']}", headers=auth("bob"), timeout=10).status_code == 404
    listed = requests.get(f"{base}/v1/videos?limit=100", headers=auth("bob"), timeout=10).json()["data"]
    assert video["id"] not in [v["id"] for v in listed]
    wait_for(lambda: not list(renders.glob(f"{video['id']}*")), 30, "the sweep to delete its files")


def test_a_create_renders_with_the_adapter_it_names(server):
    base, _, _ = server
    made = create(base, "bob", lora="ink", seed=3)
    assert made.status_code == 200, made.text
    assert made.json()["tier"] == "cloud" and made.json()["lora"] == "ink"  # the edge tier serves no adapter
    assert made.headers["X-Vidgen-Lora"] == "ink"
    video = ended(base, "bob", made.json()["id"])
    assert video["status"] == "completed", video
    assert video["model"].startswith("tiny-wan#") and "+ink#" in video["model"]
    base_only = ended(base, "bob", create(base, "bob", model="cloud", seed=3).json()["id"])
    assert "+" not in base_only["model"]
    with_ink = requests.get(f"{base}/v1/videos/{video['id']}/content", headers=auth("bob"), timeout=10).content
    without = requests.get(f"{base}/v1/videos/{base_only['id']}/content", headers=auth("bob"), timeout=10).content
    assert with_ink != without


def test_an_adapter_not_served_or_made_for_another_base_is_a_400_naming_it(server):
    base, _, digests = server
    unknown = create(base, "bob", lora="sketch")
    error = unknown.json()["error"]
    assert unknown.status_code == 400 and error["param"] == "lora"
    assert "cloud tier serves (it serves: ink, stranger)" in error["message"]
    wrong_base = create(base, "bob", lora="stranger")
    error = wrong_base.json()["error"]
    assert wrong_base.status_code == 400 and error["param"] == "lora"
    assert f"trained on base digest {digests['other']}" in error["message"]
    assert f"digest {digests['served']}" in error["message"]
