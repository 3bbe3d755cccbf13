"""An S3-compatible server on 127.0.0.1 (moto's server mode, the test extra of setup.cfg), so
that a study's ``s3://`` storage is exercised as on a cloud: Tune and pyarrow write through the
S3 API, and what lands in the bucket can be counted. pyarrow and boto3 find it through
AWS_ENDPOINT_URL; the credentials are moto's placeholders, never real ones."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from mbpo_ray.errors import ConfigError

PLACEHOLDER_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal",
                           "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalS3:
    """``with LocalS3("bucket") as s3:`` a server with one bucket; ``s3.env`` is what a process
    needs to reach it (set it before Ray starts, so that every trial process has it)."""

    def __init__(self, bucket: str, log: Optional[Path] = None):
        self.bucket, self.log = bucket, log
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: Optional[subprocess.Popen] = None

    @property
    def env(self) -> Dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, **PLACEHOLDER_CREDENTIALS}

    def __enter__(self) -> "LocalS3":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout_s: float = 30.0) -> None:
        server = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
        if server is None:
            raise ConfigError("--storage s3 needs moto's S3 server (moto_server); install it with "
                              "pip install 'moto[server]' (the test extra: pip install -e '.[test]')")
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(self.port)], stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.client().create_bucket(Bucket=self.bucket)
                return
            except Exception:  # noqa: BLE001  (the server is not listening yet)
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise ConfigError(f"the local S3 server did not start on {self.endpoint} within "
                                      f"{timeout_s:g} s") from None
                time.sleep(0.3)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="rehearsal",
                            aws_secret_access_key="rehearsal", region_name="us-east-1")

    def keys(self, prefix: str = "") -> List[str]:
        """Every object's key under ``prefix``."""
        keys, token = [], None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix, **extra)
            keys += [item["Key"] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = page["NextContinuationToken"]

    def download(self, prefix: str, target: Path) -> None:
        """Copy every object under ``prefix`` into ``target`` (as `aws s3 sync` would)."""
        client = self.client()
        for key in self.keys(prefix):
            if key.endswith("/"):
                continue
            path = target / key[len(prefix):].lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(self.bucket, key, str(path))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None
