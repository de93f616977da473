"""The serving image end to end: build it, train in one container, serve from another.

Both containers run as UID 1000 with a read-only root filesystem, /tmp as tmpfs and the
model store as a shared volume (read-only for the server), as the operator runs them.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from localcluster import docker_env

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not docker_env.can_bootstrap(), reason="needs root or a Docker daemon"),
]

MODEL_NAME = "digits"
LOCKED_DOWN = [
    "--user",
    "1000:1000",
    "--read-only",
    "--tmpfs",
    "/tmp:rw,mode=1777",
    "--network",
    "host",
]


@pytest.fixture(scope="module")
def image() -> str:
    return docker_env.build_image()


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("image-model-store")
    store.chmod(0o777)  # the container's UID 1000 writes here
    return store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def trained(image: str, model_store: Path) -> Path:
    termination = model_store / "termination-log"
    termination.write_text("")
    termination.chmod(0o666)
    result = docker_env.docker(
        "run", "--rm", *LOCKED_DOWN,
        "-v", f"{model_store}:/models",
        "-v", f"{termination}:/dev/termination-log",
        image, "train", "--epochs", "5", "--seed", "3", "--output", "/models/v1",
        timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = [json.loads(line) for line in result.stdout.splitlines() if '"epoch"' in line]
    assert len(epochs) == 5
    message = json.loads(termination.read_text())
    assert message["status"] == "Succeeded"
    assert message["uri"] == "/models/v1"
    return model_store / "v1"


@pytest.fixture(scope="module")
def server(image: str, model_store: Path, trained: Path) -> Iterator[str]:
    name = f"mso-serve-{uuid.uuid4().hex[:8]}"
    port = free_port()
    docker_env.docker(
        "run", "-d", "--name", name, *LOCKED_DOWN,
        "-v", f"{model_store}:/models:ro",
        "-e", f"MSO_PORT={port}", "-e", "MSO_HOST=127.0.0.1", "-e", "MSO_GRPC_PORT=0",
        image, "serve", "--model-dir", "/models/v1", "--model-name", MODEL_NAME,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            state = docker_env.docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
            assert state == "true", docker_env.docker("logs", name, check=False).stderr[-3000:]
            assert time.monotonic() < deadline, "server container never became ready"
            time.sleep(0.5)
        yield url
    finally:
        stopped = docker_env.docker("stop", "-t", "20", name, check=False)
        exit_code = docker_env.docker("inspect", "-f", "{{.State.ExitCode}}", name, check=False)
        docker_env.docker("rm", "-f", name, check=False)
        assert stopped.returncode == 0
        assert exit_code.stdout.strip() == "0", "SIGTERM did not end the server cleanly"


def test_trained_version_layout(trained: Path) -> None:
    assert (trained / "saved_model.pb").is_file()
    metadata = json.loads((trained / "metadata.json").read_text())
    assert metadata["inputs"][0]["shape"] == [-1, 64]
    assert metadata["metrics"]["accuracy"] > 0.85


def test_predictions_over_http(server: str) -> None:
    digits = load_digits()
    rows = digits.data[-50:].tolist()
    v1 = httpx.post(f"{server}/v1/models/{MODEL_NAME}:predict", json={"instances": rows})
    assert v1.status_code == 200, v1.text
    predicted = np.argmax(np.asarray(v1.json()["predictions"]), axis=1)
    assert (predicted == digits.target[-50:]).mean() >= 0.85
    v2 = httpx.post(
        f"{server}/v2/models/{MODEL_NAME}/infer",
        json={"inputs": [{"name": "inputs", "shape": [50, 64], "datatype": "FP32", "data": rows}]},
    )
    assert v2.status_code == 200, v2.text
    data = np.asarray(v2.json()["outputs"][0]["data"]).reshape(50, 10)
    assert (np.argmax(data, axis=1) == predicted).all()


def test_image_runs_as_uid_1000(image: str) -> None:
    result = docker_env.docker("run", "--rm", "--entrypoint", "id", image, "-u")
    assert result.stdout.strip() == "1000"
