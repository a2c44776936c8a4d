"""Bearer-token auth for the HTTP API: only the token's sha256 is shipped to the cluster and compared."""

from __future__ import annotations

import hashlib
import hmac

from cluster.serve_config import AuthConfig


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
