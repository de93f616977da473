"""Runs the app under uvicorn with a graceful, readiness-aware shutdown.

On SIGTERM readiness turns false at once; the server keeps serving for ``drain_delay_s``
(time for Kubernetes to take the pod out of its endpoints), then stops accepting
connections, lets in-flight requests finish (up to ``graceful_timeout_s``), drains the
batching queue and exits 0.
"""

from __future__ import annotations

import logging
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import prometheus_client
import uvicorn

from . import logs
from .app import ServingApp, create_app, serving_state
from .connections import ConnectionLimits
from .inference_protocol import serving_protocol
from .settings import ServeSettings
from .state import ServingState

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain phase before shutdown and an exit on load failure."""

    def __init__(self, config: uvicorn.Config, state: ServingState, drain_delay_s: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_delay_s = drain_delay_s
        self._stop_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in uvicorn's captured signals: it would re-raise SIGTERM after a clean
        # shutdown and turn exit code 0 into 143.
        if self._stop_at is not None:
            if sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            return
        self.state.draining = True
        self.state.metrics.model_ready.set(0)
        self._stop_at = time.monotonic() + self.drain_delay_s
        log.info(
            "draining", extra={"signal": signal.Signals(sig).name, "delay_s": self.drain_delay_s}
        )
        if self.drain_delay_s <= 0:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.should_exit = True
        if self.state.load_error is not None:
            self.should_exit = True
        return await super().on_tick(counter)


# File descriptors kept for everything but client connections (model files, the listening
# socket, the event loop, TensorFlow's threads).
RESERVED_FDS = 64


def connection_cap(max_connections: int) -> int:
    """``max_connections``, lowered to fit the open-file limit (raised to its hard limit
    first): a server out of descriptors cannot even answer its health probe."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return max_connections
    cap = max(1, min(max_connections, soft - RESERVED_FDS))
    if cap < max_connections:
        log.warning(
            "connection cap lowered to fit the open-file limit",
            extra={"max_connections": max_connections, "cap": cap, "nofile": soft},
        )
    return cap


def protocol_options(settings: ServeSettings, app: ServingApp) -> dict[str, Any]:
    """uvicorn settings: the protocol that bounds what clients can hold and answers the
    inference routes itself (:mod:`.inference_protocol`), and keep-alive."""
    state = serving_state(app)
    assert app.fast_path is not None
    limits = ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections=connection_cap(settings.max_connections),
        max_in_flight=settings.max_in_flight,
        on_reject=lambda reason: state.metrics.connections_refused.labels(reason).inc(),
    )
    return {
        "http": serving_protocol(limits, app.fast_path),
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        # Not uvicorn's limit_concurrency: it counts idle connections and would answer 503
        # to everyone while slow sockets are open; the guarded protocol does both caps.
        "limit_concurrency": None,
    }


def build_server(settings: ServeSettings) -> DrainingServer:
    app = create_app(settings)
    state = serving_state(app)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        lifespan="on",
        **protocol_options(settings, app),
        access_log=settings.access_log,
        log_config=logs.uvicorn_log_config(settings.log_level),
        timeout_graceful_shutdown=int(settings.graceful_timeout_s),
        server_header=False,
    )
    return DrainingServer(config, state, settings.drain_delay_s)


def _write_termination_log(path: Path | None, line: str) -> None:
    """Kubernetes shows this file as the container's termination message (best effort)."""
    if path is None:
        return
    try:
        path.write_text(line + "\n")
    except OSError as exc:
        log.warning(
            "cannot write the termination log", extra={"path": str(path), "error": str(exc)}
        )


def start_metrics_server(settings: ServeSettings, state: ServingState) -> Callable[[], None]:
    """Serve /metrics alone on ``--metrics-port`` (a thread); return what stops it.

    Its own port lets a NetworkPolicy admit the scraper there and nothing else, and keeps
    the metrics out of the inference port's auth.
    """
    httpd, thread = prometheus_client.start_http_server(
        settings.metrics_port, settings.host, registry=state.metrics.registry
    )

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)

    return stop


def run(settings: ServeSettings) -> int:
    """Serves until SIGTERM/SIGINT; 1 when the model could not be loaded."""
    server = build_server(settings)
    stop_metrics = start_metrics_server(settings, server.state) if settings.metrics_port else None
    try:
        server.run()
    finally:
        if stop_metrics is not None:
            stop_metrics()
    if server.state.load_error is not None:
        _write_termination_log(settings.termination_log, server.state.load_error)
        log.error("exiting: model not loaded", extra={"error": server.state.load_error})
        return 1
    return 0
