"""A real S3-compatible server for the tests: moto's standalone server, on 127.0.0.1, started and stopped here.

`s3_server` runs one server process for the session (nothing is left running after it); `s3` gives each
test a fresh bucket and sets the standard AWS variables a user would set (AWS_ENDPOINT_URL, keys,
region), with the local state and cache folders under the test's tmp_path.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

from benchmarks.cluster import start_s3

SECRET = "moto-secret-key-not-a-real-one"  # the server accepts any key; tests look for this one in outputs


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen

    def set_auth(self, enforced: bool) -> None:
        """moto checks credentials and IAM policies only when told to (its /moto-api/reset-auth switch)."""
        value = b"0" if enforced else b"inf"
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth", data=value, method="POST", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(request, timeout=10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    proc, endpoint = start_s3(tmp_path_factory.mktemp("moto") / "server.log")  # make cluster's server, the same way
    try:
        yield S3Server(endpoint, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class S3:
    server: S3Server
    bucket: str
    fs: object

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}".rstrip("/")

    def upload_folder(self, folder: Path, prefix: str) -> str:
        for f in sorted(folder.iterdir()):
            if f.is_file():
                self.fs.put_file(str(f), f"{self.bucket}/{prefix}/{f.name}")
        return self.url(prefix)

    def keys(self, prefix: str = "") -> list[str]:
        base = f"{self.bucket}/{prefix}".rstrip("/")
        return sorted(p[len(self.bucket) + 1 :] for p in self.fs.find(base))

    def objects(self, prefix: str) -> dict[str, bytes]:
        return {k[len(prefix) :].lstrip("/"): self.fs.cat_file(f"{self.bucket}/{k}") for k in self.keys(prefix)}


def aws_env(endpoint: str, tmp_path: Path) -> dict[str, str]:
    """The variables a user of an S3-compatible server sets; profiles and config files point nowhere."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }


def reset_filesystems() -> None:
    """fsspec keeps one s3fs per process; a test that changes credentials or the endpoint needs a new one."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3(s3_server, tmp_path, monkeypatch) -> S3:
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    for var, value in aws_env(s3_server.endpoint, tmp_path).items():
        monkeypatch.setenv(var, value)
    reset_filesystems()
    from tledit_pipeline.storage import filesystem

    fs = filesystem("s3")
    bucket = f"tledit-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    yield S3(s3_server, bucket, fs)
    reset_filesystems()


def subprocess_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """A child `tledit` process's environment: no TLEDIT_* from the outside, the AWS variables, offline."""
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TLEDIT_", "AWS_"))}
    env.update(
        aws_env(endpoint, tmp_path),
        PYTHONPATH=str(repo),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        **extra,
    )
    return env


def iam_user_without_s3(endpoint: str, tmp_path: Path) -> dict[str, str]:
    """Keys of a real IAM user of the server that no policy allows anything: every S3 request is denied."""
    import boto3

    env = aws_env(endpoint, tmp_path)
    iam = boto3.client(
        "iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key=SECRET
    )
    name = f"reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    iam.put_user_policy(
        UserName=name,
        PolicyName="nothing",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return env | {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


class StallingProxy:
    """A TCP proxy in front of the server that stops an upload part-way: a PUT whose key ends with
    `key_suffix` gets its headers and the first `body_bytes` of its body through, then nothing more.
    `stalled` is set once that happened; the client then waits (until it is killed)."""

    HEAD = re.compile(rb"PUT (\S+) HTTP/1\.1\r\n")

    def __init__(self, upstream_port: int, key_suffix: str, body_bytes: int = 64):
        self.upstream_port, self.key_suffix, self.body_bytes = upstream_port, key_suffix, body_bytes
        self.stalled = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()

    def _head_end(self, buf: bytes) -> int | None:
        """Where the headers of a PUT to the target key end in `buf` (None if no such complete head)."""
        for m in self.HEAD.finditer(buf):
            if unquote(m.group(1).split(b"?")[0].decode()).endswith(self.key_suffix):
                end = buf.find(b"\r\n\r\n", m.start())
                return None if end < 0 else end + 4
        return None

    def _pipe(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        buf, allowance = b"", None  # allowance: body bytes still let through, once the target's head passed
        try:
            while data := src.recv(65536):
                if not outbound or self.stalled.is_set() and allowance is None:
                    dst.sendall(data)
                    continue
                if allowance is None:
                    start = len(buf)
                    buf += data
                    end = self._head_end(buf)
                    if end is None:
                        dst.sendall(data)
                        buf = buf[-8192:]
                        continue
                    dst.sendall(data[: end - start])
                    data, allowance = data[end - start :], self.body_bytes
                dst.sendall(data[:allowance])
                allowance -= min(allowance, len(data))
                if allowance == 0:
                    self.stalled.set()
                    while src.recv(65536):  # the rest of the upload is swallowed until the client dies
                        pass
                    break
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self.sock.close()
        for sock in self.sockets:
            sock.close()
