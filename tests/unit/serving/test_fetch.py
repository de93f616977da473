"""Models from http(s):// URIs: download, unpack, check, load; clear one-line failures."""

from __future__ import annotations

import functools
import http.server
import io
import json
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelservice_serving.app import load_model
from modelservice_serving.fetch import ModelDownloadError, fetch_model
from modelservice_serving.settings import ServeSettings, parse

from .conftest import MODEL_NAME, TrainedModel, free_port, serving_env

pytestmark = pytest.mark.unit

LIMIT = 50 << 20
# The test server listens on loopback, which downloads refuse unless allowed.
LOOPBACK = "127.0.0.1/32"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def archives(trained_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of archives of the session model, as a user would publish them."""
    root = tmp_path_factory.mktemp("published")
    version = trained_model.model_dir
    with tarfile.open(root / "model.tar.gz", "w:gz") as tf:
        tf.add(version, arcname="v1")  # one top-level version directory
    with tarfile.open(root / "flat.tgz", "w:gz") as tf:
        for child in version.iterdir():  # the version's contents at the root
            tf.add(child, arcname=child.name)
    with zipfile.ZipFile(root / "model.zip", "w") as zf:
        for path in version.rglob("*"):
            zf.write(path, f"v1/{path.relative_to(version)}")
    with tarfile.open(root / "empty.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("v1/metadata.json")
        data = b"{}"
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (root / "notes.tar.gz").write_text("not an archive")
    with tarfile.open(root / "escape.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("../outside")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    return root


@pytest.fixture(scope="module")
def http_base(archives: Path) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 serving ``archives``."""
    handler = functools.partial(_Quiet, directory=str(archives))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("name", ["model.tar.gz", "flat.tgz", "model.zip"])
def test_archive_is_downloaded_and_loads(http_base: str, tmp_path: Path, name: str) -> None:
    settings = ServeSettings(
        model_uri=f"{http_base}/{name}",
        model_cache_dir=tmp_path,
        model_name=MODEL_NAME,
        download_allow_networks=LOOPBACK,
    )
    model = load_model(settings)
    assert model.version == "1"
    assert [spec.name for spec in model.inputs] == ["inputs"]
    # Only the unpacked model stays in the cache, not the archive as well.
    assert not list(tmp_path.glob("*.download"))


@pytest.mark.parametrize(
    ("name", "limit", "message"),
    [
        ("missing.tar.gz", LIMIT, "HTTP 404"),
        ("empty.tar.gz", LIMIT, "no saved_model.pb"),
        ("notes.tar.gz", LIMIT, "is not a .tar.gz, .tgz or .zip archive"),
        ("escape.tar.gz", LIMIT, "cannot unpack"),
        ("model.tar.gz", 1000, "above the limit of 1000"),
    ],
)
def test_bad_downloads_fail_with_one_line(
    http_base: str, tmp_path: Path, name: str, limit: int, message: str
) -> None:
    with pytest.raises(ModelDownloadError) as failed:
        fetch_model(f"{http_base}/{name}", tmp_path, limit, 10, allowed_networks=LOOPBACK)
    assert message in str(failed.value)
    assert "\n" not in str(failed.value)


def test_unpacked_size_is_limited_too(http_base: str, archives: Path, tmp_path: Path) -> None:
    # The compressed archive fits; its unpacked content does not.
    size = (archives / "model.tar.gz").stat().st_size
    with pytest.raises(ModelDownloadError, match="unpacked it exceeds the limit"):
        fetch_model(f"{http_base}/model.tar.gz", tmp_path, size + 1, 10, allowed_networks=LOOPBACK)


def test_unreachable_host_and_other_schemes(tmp_path: Path) -> None:
    with pytest.raises(ModelDownloadError, match=r"GET http://127\.0\.0\.1:\d+/m\.zip"):
        fetch_model(
            f"http://127.0.0.1:{free_port()}/m.zip", tmp_path, LIMIT, 5, allowed_networks=LOOPBACK
        )
    with pytest.raises(ModelDownloadError, match="supported: http://, https://, s3://"):
        fetch_model("gs://bucket/m.tar.gz", tmp_path, LIMIT, 5)
    with pytest.raises(ModelDownloadError, match="s3:// needs S3-style keys"):
        fetch_model("s3://bucket/m.tar.gz", tmp_path, LIMIT, 5)


def test_exactly_one_model_source() -> None:
    with pytest.raises(ValueError, match="exactly one of --model-dir and --model-uri"):
        parse(ServeSettings, [])
    with pytest.raises(ValueError, match="exactly one of --model-dir and --model-uri"):
        parse(ServeSettings, ["--model-dir", "/m", "--model-uri", "https://h/m.zip"])


def _serve(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelservice_serving", "serve", "--model-name", MODEL_NAME,
         "--host", "127.0.0.1", "--grpc-port", "0", "--download-allow-networks", LOOPBACK,
         *args],
        env=serving_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_serve_from_uri_is_ready_after_the_download(http_base: str, tmp_path: Path) -> None:
    port = free_port()
    process = _serve(
        ["--port", str(port), "--model-uri", f"{http_base}/model.tar.gz",
         "--model-cache-dir", str(tmp_path / "cache")]
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            threading.Event().wait(0.1)
        else:
            pytest.fail("never ready")
        body = {"instances": [[2.0] * 64]}
        response = httpx.post(f"{url}/v1/models/{MODEL_NAME}:predict", json=body, timeout=10)
        assert response.status_code == 200
        assert len(response.json()["predictions"][0]) == 10
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_failed_download_writes_the_termination_message(http_base: str, tmp_path: Path) -> None:
    termination = tmp_path / "termination-log"
    process = _serve(
        ["--port", str(free_port()), "--model-uri", f"{http_base}/missing.tar.gz",
         "--model-cache-dir", str(tmp_path / "cache"), "--termination-log", str(termination)]
    )  # fmt: skip
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1, output
    line = termination.read_text()
    assert line.startswith("ModelDownloadFailed: GET http://127.0.0.1:")
    assert "HTTP 404" in line
    assert line.count("\n") == 1
    last = json.loads(output.strip().splitlines()[-1])
    assert last["message"] == "exiting: model not loaded"
    assert last["error"] == line.strip()
    assert "Traceback" not in output
