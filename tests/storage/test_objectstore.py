"""The object store against a local folder and a real S3 endpoint on 127.0.0.1 (moto, credentials enforced)."""

import pytest

from storage.objectstore import AlreadyExists, NotFound, ObjectStore, S3Config, StorageError, parse_uri


def test_uris_parse_and_plain_paths_are_accepted(tmp_path):
    assert parse_uri("s3://bucket/a/b.tar").fs_path == "bucket/a/b.tar"
    assert parse_uri(tmp_path / "x").uri == f"file://{tmp_path}/x"
    assert parse_uri(f"file://{tmp_path}/x") == parse_uri(tmp_path / "x")
    assert parse_uri("s3://bucket/a").join("b", "c.json").uri == "s3://bucket/a/b/c.json"
    with pytest.raises(StorageError, match=r"unknown URI scheme 'gs'.*s3://BUCKET/KEY"):
        parse_uri("gs://bucket/x")
    with pytest.raises(StorageError, match="no bucket"):
        parse_uri("s3:///x")
    with pytest.raises(StorageError, match="three slashes"):
        parse_uri("file://tmp/x")


def test_write_read_list_exists_delete(store_root):
    store, base = store_root
    store.write(f"{base}/a/one.bin", b"1" * 10)
    store.write(f"{base}/a/b/two.bin", b"22")
    store.write(f"{base}/a/one.bin", b"one")  # replaced whole
    assert store.read(f"{base}/a/one.bin") == b"one"
    listed = store.list(f"{base}/a")
    assert [(o.uri.partition("/a/")[2], o.size) for o in listed] == [("b/two.bin", 2), ("one.bin", 3)]
    assert all(o.uri.startswith(("file:///", "s3://")) for o in listed)
    assert store.exists(f"{base}/a/b/two.bin") and not store.exists(f"{base}/a/three.bin")
    assert store.list(f"{base}/nothing-here") == []
    store.delete(f"{base}/a/one.bin")
    with pytest.raises(NotFound, match="one.bin does not exist"):
        store.read(f"{base}/a/one.bin")


def test_conditional_write_lets_exactly_one_writer_win(store_root):
    store, base = store_root
    store.write(f"{base}/claim", b"first", if_absent=True)
    with pytest.raises(AlreadyExists, match="already exists"):
        store.write(f"{base}/claim", b"second", if_absent=True)
    assert store.read(f"{base}/claim") == b"first"


def test_streamed_copies_round_trip(store_root, tmp_path):
    store, base = store_root
    src = tmp_path / "big.bin"
    src.write_bytes(bytes(range(256)) * 40_000)  # 10 MB: more than one chunk
    store.copy_from_local(src, f"{base}/big.bin")
    store.copy_to_local(f"{base}/big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


def test_missing_bucket_is_named_with_the_fix(s3_config):
    store = ObjectStore(s3_config)
    with pytest.raises(NotFound, match=r"bucket 'no-such-bucket' does not exist at http://127.0.0.1:\d+.*aws s3 mb"):
        store.read("s3://no-such-bucket/x")
    with pytest.raises(NotFound, match="bucket 'no-such-bucket' does not exist"):
        store.list("s3://no-such-bucket/prefix")


def test_wrong_credentials_are_named_with_the_fix(s3_config, bucket):
    wrong = ObjectStore(s3_config.model_copy(update={"access_key_id": "AKIAWRONGWRONGWRONG"}))
    with pytest.raises(StorageError, match="S3 refused the credentials.*AWS_ACCESS_KEY_ID"):
        wrong.read(f"{bucket}/x")
    with pytest.raises(StorageError, match="S3 refused the credentials"):
        wrong.write(f"{bucket}/x", b"data")
    with pytest.raises(StorageError, match="S3 refused the credentials"):
        wrong.list(bucket)


def test_unreachable_endpoint_is_named(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    store = ObjectStore(S3Config(endpoint_url=f"http://127.0.0.1:{port}", access_key_id="a", secret_access_key="b",
                                 max_attempts=1, connect_timeout_s=1))
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint"):
        store.read("s3://bucket/x")


def test_config_reads_the_usual_aws_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AK")
    cfg = S3Config()
    assert (cfg.endpoint_url, cfg.region, cfg.access_key_id) == ("http://minio:9000", "eu-west-3", "AK")
    with pytest.raises(ValueError, match="endpoint"):
        S3Config(endpoint="typo")



def test_threads_writing_one_local_key_never_collide(tmp_path):
    """Each writer gets its own temp file: the object ends whole, as one of the writes, and no write fails."""
    import threading

    store, key = ObjectStore(), tmp_path / "out" / "same.bin"
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    errors = []

    def write(data: bytes) -> None:
        try:
            for _ in range(20):
                store.write(key, data)
        except Exception as e:  # noqa: BLE001 - any failure is what this test looks for
            errors.append(e)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and store.read(key) in payloads
    assert [p.name for p in key.parent.iterdir()] == ["same.bin"]  # no temp file left behind
