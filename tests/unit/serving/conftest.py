"""Shared fixtures of the serving tests: one digits model trained per session, servers.

The model is trained once, through the real ``train`` entrypoint in a subprocess, into a
session temporary directory; in-process servers share one loaded copy of it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from modelservice_serving.app import create_app, serving_state
from modelservice_serving.model import ServedModel, Tensors
from modelservice_serving.server import protocol_options
from modelservice_serving.settings import ServeSettings
from modelservice_serving.state import ServingState

MODEL_NAME = "digits"
TRAIN_EPOCHS = 3


@dataclass(frozen=True)
class TrainedModel:
    model_dir: Path
    stdout: str
    termination_message: dict[str, Any]


def serving_env() -> dict[str, str]:
    """A child environment: quiet TensorFlow, one thread per pool (2 shared CPUs here)."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    root = tmp_path_factory.mktemp("model-store")
    model_dir = root / "v1"
    termination_log = root / "termination-log"
    completed = subprocess.run(
        [
            sys.executable, "-m", "modelservice_serving", "train",
            "--dataset", "digits", "--epochs", str(TRAIN_EPOCHS), "--batch-size", "32",
            "--hidden-units", "64,64", "--seed", "7",
            "--output", str(model_dir), "--termination-log", str(termination_log),
        ],
        capture_output=True, text=True, env=serving_env(), timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return TrainedModel(model_dir, completed.stdout, json.loads(termination_log.read_text()))


@pytest.fixture(scope="session")
def served_model(trained_model: TrainedModel) -> ServedModel:
    return ServedModel.load(trained_model.model_dir, MODEL_NAME)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CountingModel:
    """Wraps the shared model, counting model calls and the rows of each."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self.batches: list[int] = []
        self._predict = model.predict

    def predict(self, inputs: Tensors) -> Tensors:
        self.batches.append(len(next(iter(inputs.values()))))
        return self._predict(inputs)


@dataclass
class RunningServer:
    url: str
    state: ServingState
    counter: CountingModel


@contextmanager
def running_server(
    model: ServedModel,
    model_dir: Path,
    *,
    gate: threading.Event | None = None,
    wait_ready: bool = True,
    **overrides: Any,
) -> Iterator[RunningServer]:
    """An in-process uvicorn on a free loopback port, serving ``model``."""
    counting = CountingModel(model)
    proxy = ServedModel(
        model.name, model.version, model.inputs, model.outputs, None, model.metadata
    )
    proxy.predict = counting.predict  # type: ignore[method-assign]

    def loader(settings: ServeSettings) -> ServedModel:
        if gate is not None:
            gate.wait(30)
        return proxy

    settings = ServeSettings(
        model_dir=model_dir, model_name=MODEL_NAME, host="127.0.0.1", port=free_port(),
        **{"grpc_port": 0, **overrides},
    )  # fmt: skip
    app = create_app(settings, loader=loader)
    state = serving_state(app)
    options = protocol_options(settings, app)  # the server's own protocol and guard
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning", **options)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    deadline = time.monotonic() + 30
    while not server.started or (wait_ready and not state.ready):
        assert time.monotonic() < deadline, "server did not start"
        assert thread.is_alive(), "server thread died"
        time.sleep(0.02)
    counting.batches.clear()  # warm-up calls are not the tests' business
    try:
        yield RunningServer(url, state, counting)
    finally:
        server.should_exit = True
        thread.join(30)


ServerFactory = Callable[..., Any]


@pytest.fixture
def server_factory(served_model: ServedModel, trained_model: TrainedModel) -> Callable[..., Any]:
    """``with server_factory(max_batch_size=8) as server: ...``"""

    def factory(**overrides: Any) -> Any:
        return running_server(served_model, trained_model.model_dir, **overrides)

    return factory


@pytest.fixture
def default_server(server_factory: ServerFactory) -> Iterator[RunningServer]:
    with server_factory() as server:
        yield server


@pytest.fixture
async def client(default_server: RunningServer) -> Any:
    async with httpx.AsyncClient(base_url=default_server.url, timeout=30) as http:
        yield http
