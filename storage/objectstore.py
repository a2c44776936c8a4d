"""One small API over local folders (`file://`, or a plain path) and S3-compatible object storage (`s3://`).

Reads and writes stream through `pyarrow.fs`, the same filesystem objects Ray Data is handed; boto3 covers
the verbs pyarrow lacks: creating a bucket, telling a missing bucket from a missing key, and the conditional
`If-None-Match: *` write that lets two writers race for a name and exactly one win.

Endpoint, region and credentials come from `S3Config`, whose defaults read the usual AWS environment
variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...). `pyarrow.fs.S3FileSystem` does not
read `AWS_ENDPOINT_URL` itself, so the endpoint is always passed to it explicitly. Transient errors are
retried with backoff by both libraries' own standard retry strategies (`S3Config.max_attempts`).

Every failure a user can fix is raised as `StorageError` with one line naming the thing and the fix.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field

SCHEMES = ("file", "s3")
CHUNK = 8 << 20
# how boto3 (error codes) and pyarrow (message text) say "these credentials are not let in"
DENIED_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken")
DENIED_MARKERS = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "EXPIRED_TOKEN",
                  *DENIED_CODES[:3])


class StorageError(RuntimeError):
    """A storage failure the user can fix: the message names the object and what to do."""


class NotFound(StorageError, FileNotFoundError):
    """The object (or folder) does not exist."""


class AlreadyExists(StorageError, FileExistsError):
    """A conditional write lost: the object already exists."""


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


class S3Config(BaseModel):
    """Where S3 is and who we are there. Unset fields fall back to the standard AWS environment variables."""

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = Field(
        default_factory=lambda: _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        description="e.g. http://127.0.0.1:9000 for MinIO; None means AWS itself")
    region: str = Field(default_factory=lambda: _env("AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1")
    access_key_id: str | None = Field(default_factory=lambda: _env("AWS_ACCESS_KEY_ID"))
    secret_access_key: str | None = Field(default_factory=lambda: _env("AWS_SECRET_ACCESS_KEY"))
    session_token: str | None = Field(default_factory=lambda: _env("AWS_SESSION_TOKEN"))
    max_attempts: int = Field(5, ge=1, description="attempts per request, with exponential backoff between them")
    connect_timeout_s: float = Field(5.0, gt=0)
    request_timeout_s: float = Field(60.0, gt=0)

    def public(self) -> dict:
        """Everything but the credentials: what may travel through Ray (configs, actor arguments, which Ray's
        dashboard and state API show). An S3Config built from it on a worker reads the credentials from that
        worker's own environment: the node's credential chain, never Ray."""
        return self.model_dump(exclude=set(CREDENTIAL_ENV))

    def credentials_env(self) -> dict[str, str]:
        """The credentials as the standard AWS environment variables (for the environment a local node starts
        with: `jobs.connection.connect_ray`)."""
        return {env: getattr(self, name) for name, env in CREDENTIAL_ENV.items() if getattr(self, name)}


CREDENTIAL_ENV = {"access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY",
                  "session_token": "AWS_SESSION_TOKEN"}


@dataclass(frozen=True)
class Location:
    """A parsed URI: `file` with an absolute path in `key`, or `s3` with a bucket and a key (no leading slash)."""

    scheme: str
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"file://{self.key}" if self.scheme == "file" else f"s3://{self.bucket}/{self.key}".rstrip("/")

    @property
    def fs_path(self) -> str:
        """The path pyarrow filesystems take: `/abs/path` locally, `bucket/key` on S3."""
        return self.key if self.scheme == "file" else f"{self.bucket}/{self.key}".rstrip("/")

    @property
    def shown(self) -> str:
        """How a person (and a next command) takes it: a local folder as its path, else the URI."""
        return self.key if self.scheme == "file" else self.uri

    @property
    def name(self) -> str:
        return posixpath.basename(self.key.rstrip("/"))

    def join(self, *parts: str) -> Location:
        return Location(self.scheme, self.bucket, posixpath.join(self.key, *parts) if self.key else
                        posixpath.join(*parts))

    def __str__(self) -> str:
        return self.uri


def parse_uri(uri: str | Path | Location) -> Location:
    """`s3://bucket/key`, `file:///abs/path`, or a plain (relative or absolute) local path."""
    if isinstance(uri, Location):
        return uri
    text = str(uri)
    if "://" not in text:
        return Location("file", "", str(Path(text).expanduser().resolve()))
    parsed = urlparse(text)
    if parsed.scheme not in SCHEMES:
        raise StorageError(f"unknown URI scheme {parsed.scheme!r} in {text!r}: use s3://BUCKET/KEY, "
                           "file:///ABSOLUTE/PATH or a plain local path")
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"{text!r} names host {parsed.netloc!r}; a file URI needs three slashes: "
                               f"file:///{parsed.netloc}{parsed.path}")
        return Location("file", "", str(Path(parsed.path).resolve()))
    if not parsed.netloc:
        raise StorageError(f"{text!r} has no bucket: write s3://BUCKET/KEY")
    return Location("s3", parsed.netloc, parsed.path.lstrip("/"))


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int


class ObjectStore:
    """Read, write and list objects under `file://` and `s3://` URIs. Picklable: clients are made lazily."""

    def __init__(self, s3: S3Config | None = None):
        self.s3 = s3 or S3Config()
        self._clients: dict[str, object] = {}

    def __getstate__(self) -> dict:
        return {"s3": self.s3, "_clients": {}}

    # --- the two libraries underneath ---

    def filesystem(self, uri: str | Path | Location, for_ray: bool = False) -> tuple[pafs.FileSystem, str]:
        """The pyarrow filesystem and path for a URI. `for_ray`: one to hand to Ray (`ray.data.read_*(paths,
        filesystem=fs)`, a RunConfig's storage), which pickles it: it holds no credentials, so each process that
        unpickles it finds them in its own environment (the node's AWS chain)."""
        loc = parse_uri(uri)
        if loc.scheme == "file":
            return pafs.LocalFileSystem(), loc.fs_path
        name = "s3fs-for-ray" if for_ray else "s3fs"
        if name not in self._clients:
            cfg = self.s3
            endpoint = urlparse(cfg.endpoint_url) if cfg.endpoint_url else None
            self._clients[name] = pafs.S3FileSystem(
                region=cfg.region,
                access_key=None if for_ray else cfg.access_key_id,
                secret_key=None if for_ray else cfg.secret_access_key,
                session_token=None if for_ray else cfg.session_token,
                endpoint_override=endpoint.netloc if endpoint else None,
                scheme=endpoint.scheme if endpoint else "https",
                connect_timeout=cfg.connect_timeout_s,
                request_timeout=cfg.request_timeout_s,
                retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=cfg.max_attempts),
            )
        return self._clients[name], loc.fs_path

    def _boto(self):
        if "boto" not in self._clients:
            import boto3
            from botocore.config import Config

            cfg = self.s3
            self._clients["boto"] = boto3.client(
                "s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region,
                aws_access_key_id=cfg.access_key_id, aws_secret_access_key=cfg.secret_access_key,
                aws_session_token=cfg.session_token,
                config=Config(retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
                              connect_timeout=cfg.connect_timeout_s, read_timeout=cfg.request_timeout_s))
        return self._clients["boto"]

    @contextmanager
    def _errors(self, loc: Location, verb: str) -> Iterator[None]:
        """Turn library errors into one-line StorageErrors that say what to fix."""
        try:
            yield
        except StorageError:
            raise
        except FileNotFoundError as e:
            if loc.scheme == "s3" and not self.bucket_exists(loc):
                raise self._no_bucket(loc) from e
            raise NotFound(f"{loc.uri} does not exist (while trying to {verb} it)") from e
        except Exception as e:  # botocore and pyarrow raise many types; classify by what they say
            self._reraise(loc, verb, e)

    def _reraise(self, loc: Location, verb: str, error: Exception) -> None:
        mapped = self._classify(loc, verb, error)
        if mapped is error:
            raise error
        raise mapped from error

    def _no_bucket(self, loc: Location) -> StorageError:
        return NotFound(f"bucket {loc.bucket!r} does not exist at {self.s3.endpoint_url or 'AWS S3'}: "
                        f"create it (aws s3 mb s3://{loc.bucket}) or fix the URI {loc.uri}")

    def _classify(self, loc: Location, verb: str, error: Exception) -> Exception:
        """A StorageError for the failures a user can fix; the error itself otherwise."""
        text = str(error)
        code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
        if code in DENIED_CODES or any(marker in text for marker in DENIED_MARKERS):
            reason = code or "access denied"
            return StorageError(f"S3 refused the credentials while trying to {verb} {loc.uri} ({reason}): set "
                                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or S3Config) to a key allowed to use "
                                "this bucket")
        if code == "NoSuchBucket" or "NoSuchBucket" in text:
            return self._no_bucket(loc)
        if code in ("NoSuchKey", "404"):
            return NotFound(f"{loc.uri} does not exist (while trying to {verb} it)")
        if "Could not connect" in text or "connect" in type(error).__name__.lower() or "curlCode" in text:
            return StorageError(f"cannot reach the S3 endpoint {self.s3.endpoint_url or 'AWS'} to {verb} {loc.uri}: "
                                "check AWS_ENDPOINT_URL and that the server is running")
        return error

    # --- objects ---

    def read(self, uri: str | Path | Location) -> bytes:
        loc = parse_uri(uri)
        fs, path = self.filesystem(loc)
        with self._errors(loc, "read"), fs.open_input_stream(path) as f:
            return f.read()

    def write(self, uri: str | Path | Location, data: bytes, if_absent: bool = False) -> None:
        """Write an object whole: readers see the old object or the new one, never a part.

        With `if_absent`, raise AlreadyExists instead of replacing an existing object (atomically:
        S3's `If-None-Match: *`, a hard link locally).
        """
        loc = parse_uri(uri)
        if loc.scheme == "s3":
            with self._errors(loc, "write"):
                if if_absent:
                    self._put_if_absent(loc, data)
                else:
                    fs, path = self.filesystem(loc)
                    with fs.open_output_stream(path) as f:
                        f.write(data)
            return
        path = Path(loc.key)
        tmp = _local_temp(path)
        tmp.write_bytes(data)
        try:
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise AlreadyExists(f"{loc.uri} already exists") from None
            else:
                tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def _put_if_absent(self, loc: Location, data: bytes) -> None:
        from botocore.exceptions import ClientError

        try:
            self._boto().put_object(Bucket=loc.bucket, Key=loc.key, Body=data, IfNoneMatch="*")
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise AlreadyExists(f"{loc.uri} already exists") from None
            raise

    def copy_to_local(self, uri: str | Path | Location, dest: Path) -> None:
        """Stream an object into a local file, chunk by chunk (for files too big to hold in memory)."""
        loc = parse_uri(uri)
        fs, path = self.filesystem(loc)
        with self._errors(loc, "read"), fs.open_input_stream(path) as src, open(dest, "wb") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)

    def copy_from_local(self, src: Path, uri: str | Path | Location) -> None:
        """Stream a local file into an object (multipart on S3)."""
        loc = parse_uri(uri)
        if loc.scheme == "file":
            path = Path(loc.key)
            tmp = _local_temp(path)
            try:
                shutil.copyfile(src, tmp)
                tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)
            return
        fs, path = self.filesystem(loc)
        with self._errors(loc, "write"), open(src, "rb") as f, fs.open_output_stream(path) as out:
            while chunk := f.read(CHUNK):
                out.write(chunk)

    def exists(self, uri: str | Path | Location) -> bool:
        loc = parse_uri(uri)
        fs, path = self.filesystem(loc)
        with self._errors(loc, "look up"):
            return fs.get_file_info(path).type == pafs.FileType.File

    def list(self, prefix: str | Path | Location) -> list[ObjectInfo]:
        """Every object under a folder/prefix, recursively, sorted by URI. A missing folder lists as empty."""
        loc = parse_uri(prefix)
        if loc.scheme == "s3" and not self.bucket_exists(loc):
            raise self._no_bucket(loc)
        fs, path = self.filesystem(loc)
        with self._errors(loc, "list"):
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        prefix_uri = loc.uri.rstrip("/")
        base = path.rstrip("/")
        return sorted((ObjectInfo(prefix_uri + info.path[len(base):], info.size) for info in infos
                       if info.type == pafs.FileType.File and not info.base_name.endswith(".partial")),
                      key=lambda o: o.uri)

    def delete(self, uri: str | Path | Location) -> None:
        loc = parse_uri(uri)
        fs, path = self.filesystem(loc)
        with self._errors(loc, "delete"):
            fs.delete_file(path)

    # --- buckets ---

    def bucket_exists(self, uri: str | Path | Location) -> bool:
        loc = parse_uri(uri)
        if loc.scheme == "file":
            return True
        from botocore.exceptions import ClientError

        try:
            self._boto().head_bucket(Bucket=loc.bucket)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                return False
            self._reraise(loc, "find the bucket of", e)
        except Exception as e:
            self._reraise(loc, "find the bucket of", e)

    def ensure_bucket(self, uri: str | Path | Location) -> None:
        """Create the URI's bucket if it does not exist yet (no-op for local folders)."""
        loc = parse_uri(uri)
        if loc.scheme == "file" or self.bucket_exists(loc):
            return
        kwargs = {}
        if self.s3.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.s3.region}
        with self._errors(loc, "create the bucket of"):
            self._boto().create_bucket(Bucket=loc.bucket, **kwargs)


def _local_temp(path: Path) -> Path:
    """A new, uniquely named temp file beside `path` (its folder made first), so that concurrent writers of one
    key, threads or hosts on a shared filesystem, never share one; hidden and `.partial`, so listings skip it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    return Path(name)
