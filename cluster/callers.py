"""Who is calling, and what each caller may do: API keys with their own limits, and the per-caller admission of
renders.

One caller is the single token of `auth.token_env` / `auth.token_sha256` (named `default`, no limits). Several are a
keys file (`auth.keys_file`), YAML, each key id with the sha256 of its token and optional limits:

    default_limits: {creates_per_minute: 30, max_concurrent_renders: 4}   # for keys that give none
    keys:
      alice: {token_sha256: 9f86d0...}                                    # sha256 of the token, never the token
      batch: {token_sha256: 60303a..., limits: {max_concurrent_renders: 16}}

A Kubernetes Secret mounted as a volume is such a file; the kubelet rewrites it when the Secret changes, and the
router reads it again (checked every `RELOAD_EVERY_S`): keys are added and revoked without a restart. A file that
no longer parses keeps the keys read before and is logged.

The key id owns the renders made with it (`cluster.async_renders`): each caller lists, reads, downloads and deletes
only its own. `CallerAdmission` applies each caller's limits to creates: a token bucket of `creates_per_minute`
(holding `burst`), and `max_concurrent_renders` renders queued or running at once. Both are counted by each router
replica (the router runs as one replica unless scaled): with N router replicas a caller may get N times its limits.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from vidgen.clip_request import problems_of

log = logging.getLogger(__name__)

# The one caller a single configured token stands for; the owner of every render made with it.
DEFAULT_CALLER = "default"
# How often the keys file is looked at for changes (a stat; it is read again only when it changed).
RELOAD_EVERY_S = 2.0
KeyId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class CallerLimits(BaseModel):
    """What one caller may ask of the deployment; a limit left out is no limit."""

    model_config = ConfigDict(extra="forbid")

    creates_per_minute: float | None = Field(None, gt=0, description="renders it may create per minute (POST "
                                                                     "/v1/videos and /v1/videos/sync; polls and "
                                                                     "downloads are not counted)")
    burst: int | None = Field(None, ge=1, description="creates it may make at once before the rate applies; "
                                                      "default: a minute's worth")
    max_concurrent_renders: int | None = Field(None, ge=1, description="its renders queued or running at once")

    @property
    def bucket_size(self) -> float:
        return float(self.burst or math.ceil(self.creates_per_minute or 1))


class CallerKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 (hex) of the caller's bearer token")
    limits: CallerLimits | None = Field(None, description="its own limits; left out: the file's default_limits")


class KeysFile(BaseModel):
    """A keys file: key id -> its token's sha256 and limits."""

    model_config = ConfigDict(extra="forbid")

    default_limits: CallerLimits = Field(default_factory=CallerLimits, description="for keys that give none")
    keys: dict[KeyId, CallerKey] = Field(min_length=1, description="key id (who owns the renders) -> its key")

    @model_validator(mode="after")
    def _tokens_differ(self):
        seen: dict[str, str] = {}
        for key_id, key in self.keys.items():
            if key.token_sha256 in seen:
                raise ValueError(f"keys {seen[key.token_sha256]} and {key_id} have the same token_sha256; give each "
                                 "caller its own token")
            seen[key.token_sha256] = key_id
        return self


def read_keys_file(path: str | Path) -> KeysFile:
    """The keys file at `path`; ValueError naming the file and the field for anything else."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"keys file {path}: cannot be read as YAML ({' '.join(str(e).split())})") from e
    try:
        return KeysFile.model_validate(raw if raw is not None else {})
    except ValidationError as e:
        raise ValueError(f"keys file {path}: {'; '.join(problems_of(e))}") from None


def _sha256(presented: str) -> str:
    return hashlib.sha256(presented.encode()).hexdigest()


class Callers:
    """Who a presented bearer token is (`identify`: the key id, None for no one) and that caller's limits."""

    def identify(self, presented: str | None) -> str | None:
        raise NotImplementedError

    def limits_of(self, caller: str) -> CallerLimits:
        raise NotImplementedError


class SingleCaller(Callers):
    """The one token of `auth.token_env` / `auth.token_sha256`: its holder is `DEFAULT_CALLER`, without limits."""

    def __init__(self, digest: str):
        self.digest = digest

    def identify(self, presented: str | None) -> str | None:
        presented_digest = _sha256(presented) if presented else ""
        return DEFAULT_CALLER if hmac.compare_digest(presented_digest, self.digest) else None

    def limits_of(self, caller: str) -> CallerLimits:
        return CallerLimits()


class KeysFileCallers(Callers):
    """The keys of a keys file, read again when it changes (a rotated Kubernetes Secret)."""

    def __init__(self, path: str | Path, reload_every_s: float = RELOAD_EVERY_S):
        self.path, self.reload_every_s = Path(path), reload_every_s
        self.keys = read_keys_file(self.path)  # a broken file at start is the operator's to fix: refuse to serve
        self._stamp, self._checked = self._file_stamp(), time.monotonic()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)  # follows the symlinks a mounted Secret is made of
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def current(self) -> KeysFile:
        """The keys, read again when the file changed since it was last looked at (at most every reload_every_s)."""
        now = time.monotonic()
        if now - self._checked >= self.reload_every_s:
            self._checked = now
            stamp = self._file_stamp()
            if stamp != self._stamp:
                try:
                    self.keys = read_keys_file(self.path)
                    self._stamp = stamp
                    log.info("keys file %s read again: %d keys", self.path, len(self.keys.keys))
                except ValueError as e:
                    log.error("%s; still serving the %d keys read before", e, len(self.keys.keys))
        return self.keys

    def identify(self, presented: str | None) -> str | None:
        """Every key is compared (in constant time each), so the answer takes as long whichever key matched."""
        presented_digest = _sha256(presented) if presented else ""
        found = None
        for key_id, key in self.current().keys.items():
            if hmac.compare_digest(presented_digest, key.token_sha256):
                found = key_id
        return found

    def limits_of(self, caller: str) -> CallerLimits:
        keys = self.current()
        key = keys.keys.get(caller)
        return key.limits if key is not None and key.limits is not None else keys.default_limits


@dataclass(frozen=True)
class Refusal:
    """Why a caller's create is refused now (429), and when to try again (None: unknown)."""

    message: str
    code: str
    retry_after_s: float | None


class CallerAdmission:
    """Each caller's creates against its limits, as one router replica counts them: a token bucket per caller for
    the rate, and the renders it has queued or running here for the concurrency. A create admitted holds one of
    its caller's render slots (counted at once, so creates racing cannot both take the last one) until `ended`."""

    def __init__(self):
        self.buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, when counted)
        self.active: Counter[str] = Counter()

    def admit(self, caller: str, limits: CallerLimits, now: float | None = None,
              soonest_free_s: Callable[[], float | None] = lambda: None) -> Refusal | None:
        """None when `caller` may create a render now (a token is taken and a render slot held); else the Refusal.
        `soonest_free_s()`: how soon the caller's first running render is expected to end (the Retry-After of a
        concurrency refusal)."""
        now = time.monotonic() if now is None else now
        most = limits.max_concurrent_renders
        if most is not None and self.active[caller] >= most:
            return Refusal(f"{caller} has {self.active[caller]} renders queued or running, its limit "
                           f"(max_concurrent_renders {most}); wait for one to end or delete one",
                           "concurrency_limit_exceeded", soonest_free_s())
        if limits.creates_per_minute is not None:
            refusal = self._take_token(caller, limits, now)
            if refusal is not None:
                return refusal
        self.active[caller] += 1
        return None

    def _take_token(self, caller: str, limits: CallerLimits, now: float) -> Refusal | None:
        per_s, size = limits.creates_per_minute / 60, limits.bucket_size
        tokens, then = self.buckets.get(caller, (size, now))
        tokens = min(size, tokens + (now - then) * per_s)
        if tokens < 1:
            self.buckets[caller] = (tokens, now)
            return Refusal(f"{caller} is over its rate (creates_per_minute {limits.creates_per_minute:g}, burst "
                           f"{size:g}); retry after the time given", "rate_limit_exceeded", (1 - tokens) / per_s)
        self.buckets[caller] = (tokens - 1, now)
        return None

    def ended(self, caller: str) -> None:
        """A render slot `admit` gave `caller` is free again (its render ended, or none was started)."""
        self.active[caller] -= 1
        if self.active[caller] <= 0:
            del self.active[caller]


def retry_headers(retry_after_s: float | None) -> dict[str, str]:
    """Retry-After (whole seconds, rounded up) and retry-after-ms (which the openai SDK prefers) of a 429; none when
    the wait is unknown."""
    if retry_after_s is None:
        return {}
    wait = max(retry_after_s, 0.001)
    return {"Retry-After": str(math.ceil(wait)), "retry-after-ms": str(math.ceil(wait * 1000))}
