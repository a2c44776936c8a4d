"""What `vidgen serve up` tells a person to try once the app is up: the token that deployment takes."""

from cluster.serve_config import AuthConfig
from vidgen.cli.serve import try_it

URL = "http://127.0.0.1:8000"


def test_one_token_is_read_from_its_variable():
    curl, sdk = try_it(URL, AuthConfig(), insecure_local=False)
    assert '-H "Authorization: Bearer $VIDGEN_SERVE_TOKEN"' in curl and f"{URL}/v1/videos/sync" in curl
    assert "api_key=os.environ['VIDGEN_SERVE_TOKEN']" in sdk and f"base_url='{URL}/v1'" in sdk


def test_with_a_keys_file_each_caller_presents_their_own_token():
    lines = try_it(URL, AuthConfig(keys_file="/etc/vidgen/keys.yaml"), insecure_local=False)
    assert not any("VIDGEN_SERVE_TOKEN" in line for line in lines)
    assert "Bearer $TOKEN" in lines[0] and "api_key=TOKEN" in lines[1]
    assert "/etc/vidgen/keys.yaml" in lines[2]


def test_insecure_local_needs_no_header():
    curl, sdk = try_it(URL, AuthConfig(), insecure_local=True)
    assert "Authorization" not in curl and "api_key='local'" in sdk
