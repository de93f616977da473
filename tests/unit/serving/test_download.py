"""Guarded downloads: SSRF refused after DNS and on every redirect, one deadline, no echo.

Two local HTTP servers stand for the outside world and for an internal endpoint: the
"public" one on 127.0.0.1 (reached only because a test allow-lists 127.0.0.1/32) and an
"internal" one on 127.0.0.2 that serves a fake credential body, as a cloud metadata endpoint
would. A redirect from the first to the second must be refused before any request reaches
the second, and no error may contain the body.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modelservice_serving.credentials import CredentialsError, request_headers
from modelservice_serving.download import (
    DownloadError,
    DownloadPolicy,
    address_allowed,
    download,
    parse_networks,
)
from modelservice_serving.fetch import ModelDownloadError, fetch_model
from modelservice_serving.train import datasets
from modelservice_serving.train import main as train_main
from modelservice_serving.train.errors import DatasetDownloadFailedError

pytestmark = pytest.mark.unit

CREDENTIAL_BODY = b"aws_secret_access_key=FAKEsecretKEYnotREAL0123456789"
LOOPBACK_1 = parse_networks("127.0.0.1/32")


@dataclass
class _World:
    public: str
    internal: str
    internal_hits: list[str] = field(default_factory=list)
    headers_seen: dict[str, dict[str, str]] = field(default_factory=dict)


def _handler(world: _World, internal: bool) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, code: int, body: bytes, reason: str | None = None) -> None:
            self.send_response(code, reason)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            world.headers_seen[("internal" if internal else "public") + self.path] = dict(
                self.headers
            )
            if internal:
                world.internal_hits.append(self.path)
                self._send(200, CREDENTIAL_BODY)
                return
            path = self.path.split("?")[0]
            if path == "/ok.bin":
                self._send(200, b"x" * 1000)
            elif path == "/to-internal":
                self.send_response(302)
                self.send_header("Location", f"{world.internal}/latest/meta-data/credentials")
                self.end_headers()
            elif path == "/to-metadata":
                self.send_response(307)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.end_headers()
            elif path == "/to-ftp":
                self.send_response(301)
                self.send_header("Location", "ftp://127.0.0.1/model.tgz")
                self.end_headers()
            elif path == "/loop":
                self.send_response(302)
                self.send_header("Location", "/loop")
                self.end_headers()
            elif path == "/error-with-secret":
                # A body and a reason phrase chosen by the server: neither may be echoed.
                self._send(500, CREDENTIAL_BODY, reason="Oops " + CREDENTIAL_BODY.decode())
            elif path == "/trickle-body":
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            elif path == "/trickle-headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                for index in range(100):
                    self.wfile.write(f"X-Slow-{index}: y\r\n".encode())
                    self.wfile.flush()
                    time.sleep(0.1)
            elif path == "/no-length":  # the body ends when the connection closes
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"x" * 1000)
            elif path == "/short":
                self.send_response(200)
                self.send_header("Content-Length", "5000")
                self.end_headers()
                self.wfile.write(b"x" * 100)
            elif path in ARCHIVES:
                self._send(200, ARCHIVES[path])
            else:
                self._send(404, CREDENTIAL_BODY)

    return Handler


def _tar(entries: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for index in range(entries):
            info = tarfile.TarInfo(f"v1/f{index}")
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    return buffer.getvalue()


def _corrupt_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("v1/saved_model.pb", b"y" * 4096)
    data = bytearray(buffer.getvalue())
    data[40:60] = b"\0" * 20  # inside the compressed member: its CRC or inflate fails
    return bytes(data)


CSV = b"a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n"
ARCHIVES = {
    "/data.csv": CSV,
    "/many.tgz": _tar(50),
    "/truncated.tgz": _tar(5)[: len(_tar(5)) // 2],
    "/corrupt.zip": _corrupt_zip(),
}


@pytest.fixture(scope="module")
def world() -> Iterator[_World]:
    servers = []
    world = _World("", "")
    for host, internal in (("127.0.0.1", False), ("127.0.0.2", True)):
        server = http.server.ThreadingHTTPServer((host, 0), _handler(world, internal))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        base = f"http://{host}:{server.server_address[1]}"
        if internal:
            world.internal = base
        else:
            world.public = base
    yield world
    for server in servers:
        server.shutdown()


def _fails(url: str, tmp_path: Path, **policy: object) -> str:
    options: dict[str, object] = {"max_bytes": 1 << 20, "allowed_networks": LOOPBACK_1}
    options.update(policy)
    with pytest.raises(DownloadError) as failed:
        download(url, tmp_path / "out", DownloadPolicy(**options))  # type: ignore[arg-type]
    message = str(failed.value)
    assert CREDENTIAL_BODY.decode() not in message
    assert "FAKEsecret" not in message
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "169.254.169.254", "10.96.0.1", "172.16.3.4", "192.168.1.1",
     "100.64.0.1", "0.0.0.0", "::ffff:127.0.0.1", "fd00::1", "fe80::1", "224.0.0.1"],
)  # fmt: skip
def test_inside_addresses_are_refused_by_default(address: str) -> None:
    assert not address_allowed(address, ())


def test_public_addresses_and_allowed_networks_pass() -> None:
    assert address_allowed("93.184.216.34", ())
    assert address_allowed("2606:4700::1111", ())
    assert address_allowed("10.1.2.3", parse_networks("10.0.0.0/8"))
    assert not address_allowed("10.1.2.3", parse_networks("10.2.0.0/16"))


def test_default_policy_refuses_loopback_before_connecting(world: _World, tmp_path: Path) -> None:
    message = _fails(f"{world.public}/ok.bin", tmp_path, allowed_networks=())
    assert "refused: 127.0.0.1 resolves to 127.0.0.1" in message
    assert "public/ok.bin" not in world.headers_seen


def test_localhost_name_is_checked_after_resolution(world: _World, tmp_path: Path) -> None:
    port = world.public.rsplit(":", 1)[1]
    message = _fails(f"http://localhost:{port}/ok.bin", tmp_path, allowed_networks=())
    assert "refused: localhost resolves to" in message


def test_allowed_network_downloads_with_sha256(world: _World, tmp_path: Path) -> None:
    got = download(
        f"{world.public}/ok.bin", tmp_path / "out", DownloadPolicy(1 << 20, 10, LOOPBACK_1)
    )
    assert got.size == 1000
    assert (tmp_path / "out").read_bytes() == b"x" * 1000
    assert got.sha256 == hashlib.sha256(b"x" * 1000).hexdigest()


def test_redirect_to_an_internal_address_is_refused_and_nothing_echoed(
    world: _World, tmp_path: Path
) -> None:
    world.internal_hits.clear()
    message = _fails(f"{world.public}/to-internal", tmp_path)
    assert "refused: 127.0.0.2 resolves to 127.0.0.2" in message
    assert world.internal_hits == []  # the internal endpoint was never asked
    assert not (tmp_path / "out").exists() or CREDENTIAL_BODY not in (tmp_path / "out").read_bytes()


def test_redirect_to_link_local_metadata_is_refused(world: _World, tmp_path: Path) -> None:
    message = _fails(f"{world.public}/to-metadata", tmp_path)
    assert "GET http://169.254.169.254/latest/meta-data/: refused" in message


def test_redirect_to_another_scheme_is_refused(world: _World, tmp_path: Path) -> None:
    assert "scheme ftp:// refused" in _fails(f"{world.public}/to-ftp", tmp_path)


def test_redirect_loops_end(world: _World, tmp_path: Path) -> None:
    assert "more than 5 redirects" in _fails(f"{world.public}/loop", tmp_path)


def test_error_never_quotes_the_body_or_the_servers_reason(world: _World, tmp_path: Path) -> None:
    message = _fails(f"{world.public}/error-with-secret", tmp_path)
    assert message.endswith(": HTTP 500 Internal Server Error")
    assert "Oops" not in message


def test_urls_in_errors_are_redacted(world: _World, tmp_path: Path) -> None:
    url = world.public.replace("http://", "http://user:hunter2@") + "/missing?X-Amz-Signature=s1g"
    message = _fails(url, tmp_path)
    assert "hunter2" not in message
    assert "s1g" not in message
    shown = world.public.replace("http://", "http://REDACTED@")
    assert message == f"GET {shown}/missing?REDACTED: HTTP 404 Not Found"


@pytest.mark.parametrize("path", ["/trickle-body", "/trickle-headers"])
def test_one_total_deadline_stops_a_trickling_server(
    world: _World, tmp_path: Path, path: str
) -> None:
    started = time.monotonic()
    message = _fails(f"{world.public}{path}", tmp_path, deadline_s=1.0)
    elapsed = time.monotonic() - started
    assert "not complete within the deadline of 1s" in message
    assert elapsed < 3, elapsed  # each read was quick, but the total is bounded


def test_byte_limit_and_short_responses(world: _World, tmp_path: Path) -> None:
    declared = _fails(f"{world.public}/ok.bin", tmp_path, max_bytes=500)
    assert "1000 bytes, above the limit of 500" in declared
    streamed = _fails(f"{world.public}/no-length", tmp_path, max_bytes=500)
    assert "exceeds the limit of 500 bytes" in streamed
    assert "ended 4900 bytes short" in _fails(f"{world.public}/short", tmp_path)


def test_credentials_go_to_the_first_host_only(world: _World, tmp_path: Path) -> None:
    both = parse_networks("127.0.0.1/32,127.0.0.2/32")
    policy = DownloadPolicy(1 << 20, 10, both, {"Authorization": "Bearer t0ken"})
    download(f"{world.public}/ok.bin", tmp_path / "a", policy)
    assert world.headers_seen["public/ok.bin"]["Authorization"] == "Bearer t0ken"
    download(f"{world.public}/to-internal", tmp_path / "b", policy)
    seen = world.headers_seen["internal/latest/meta-data/credentials"]
    assert "Authorization" not in seen


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/many.tgz", "more than 20 entries in the archive"),
        ("/truncated.tgz", "cannot unpack"),
        ("/corrupt.zip", "cannot unpack: BadZipFile"),
    ],
)
def test_archive_limits_and_corrupt_archives_are_model_download_failures(
    world: _World, tmp_path: Path, path: str, message: str
) -> None:
    with pytest.raises(ModelDownloadError) as failed:
        fetch_model(
            f"{world.public}{path}",
            tmp_path,
            1 << 20,
            10,
            allowed_networks="127.0.0.1/32",
            max_entries=20,
        )
    assert message in str(failed.value)
    assert "\n" not in str(failed.value)


def test_fetch_model_refuses_loopback_by_default(world: _World, tmp_path: Path) -> None:
    with pytest.raises(ModelDownloadError, match=r"refused: 127\.0\.0\.1 resolves"):
        fetch_model(f"{world.public}/many.tgz", tmp_path, 1 << 20, 10)


def test_dataset_download_is_guarded_too(world: _World, tmp_path: Path) -> None:
    world.internal_hits.clear()
    with pytest.raises(DatasetDownloadFailedError) as failed:
        datasets.load(f"{world.public}/to-internal?token=s3cr3t")  # the default policy
    message = str(failed.value)
    assert "refused: 127.0.0.1 resolves to 127.0.0.1" in message
    assert "s3cr3t" not in message
    allowed = DownloadPolicy(1 << 20, 10, LOOPBACK_1)
    with pytest.raises(DatasetDownloadFailedError, match=r"refused: 127\.0\.0\.2"):
        datasets.load(f"{world.public}/to-internal", download_policy=allowed)
    assert world.internal_hits == []
    data = datasets.load(f"{world.public}/data.csv", download_policy=allowed)
    assert data.features.shape == (4, 2)
    assert data.sha256 == hashlib.sha256(CSV).hexdigest()


def test_training_failure_line_redacts_urls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    termination = tmp_path / "termination-log"
    message = "dataset 'https://u:pw@h/d.csv?sig=abc' is neither .csv nor .npz"
    assert train_main.fail(termination, "UnsupportedDataset", message) == 1
    written = termination.read_text() + capsys.readouterr().err
    assert "pw@" not in written
    assert "sig=abc" not in written
    assert "https://REDACTED@h/d.csv?REDACTED" in written


def test_credentials_from_a_mounted_secret(tmp_path: Path) -> None:
    assert request_headers(None) == {}
    (tmp_path / "token").write_text("t0k\n")
    assert request_headers(tmp_path) == {"Authorization": "Bearer t0k"}
    basic = tmp_path / "basic"
    basic.mkdir()
    (basic / "username").write_text("ann")
    (basic / "password").write_text("pw")
    assert request_headers(basic) == {"Authorization": "Basic YW5uOnB3"}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CredentialsError, match="none of: token, username and password, or AWS_"):
        request_headers(empty)
    with pytest.raises(CredentialsError, match="does not exist"):
        request_headers(tmp_path / "missing")
