"""A real S3 endpoint on 127.0.0.1 (moto's server mode) for tests, benchmarks and offline trials.

It speaks S3 over HTTP exactly as AWS does and enforces credentials: only the access key made at start
is let in. Data lives in the server's memory and is gone when it stops. Needs `moto[server]` (a dev extra).

    with LoopbackS3(port) as s3:        # a free loopback port, e.g. cluster.launcher.free_ports(1)[0]
        store = ObjectStore(s3.config)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from storage.objectstore import S3Config

BOOTSTRAP_CALLS = 3  # the IAM calls below, let through before any key exists


class LoopbackS3:
    """Start moto's S3 server in its own process on a loopback port, with one IAM user allowed everything."""

    def __init__(self, port: int, start_timeout_s: float = 30):
        self.port = port
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self.config: S3Config | None = None

    def start(self) -> LoopbackS3:
        import boto3

        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(BOOTSTRAP_CALLS)}
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"moto's S3 server did not start on port {self.port}") from None
                time.sleep(0.1)
        iam = boto3.client("iam", endpoint_url=self.endpoint_url, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="vidgen")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="vidgen", PolicyName="all", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="vidgen")["AccessKey"]
        self.config = S3Config(endpoint_url=self.endpoint_url, region="us-east-1", access_key_id=key["AccessKeyId"],
                               secret_access_key=key["SecretAccessKey"], max_attempts=2)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def __enter__(self) -> LoopbackS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
