"""The FastAPI app factory: routers, error mapping, metrics and the model's lifecycle.

The process is live as soon as it serves HTTP. The model loads (downloaded first when given
as ``--model-uri``) in the background, off the event loop; readiness turns true only after
it is loaded and warmed up, and false again when shutdown begins.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from . import __version__, errors, openapi, payloads, protocol_v1, protocol_v2
from .access import BearerTokenMiddleware, read_token
from .batching import DynamicBatcher
from .contract import ServerFailure, server_failure_line
from .fastpath import InferenceFastPath
from .fetch import ModelDownloadError, fetch_model
from .grpc_server import GrpcListener
from .metrics import RequestMetricsMiddleware, ServerMetrics
from .model import ServedModel
from .redact import redact_url
from .settings import ServeSettings
from .state import ServingState

log = logging.getLogger(__name__)

ModelLoader = Callable[[ServeSettings], ServedModel]


def load_model(settings: ServeSettings) -> ServedModel:
    """Load ``--model-dir``, or first download ``--model-uri`` into the cache directory."""
    model_dir = settings.model_dir
    if settings.model_uri is not None:
        model_dir = fetch_model(
            settings.model_uri,
            settings.model_cache_dir,
            settings.model_max_bytes,
            settings.download_timeout_s,
            allowed_networks=settings.download_allow_networks,
            credentials_dir=settings.model_credentials_dir,
            max_entries=settings.model_max_entries,
        )
    assert model_dir is not None  # the settings give exactly one source
    return ServedModel.load(
        model_dir, settings.model_name, settings.model_threads, settings.model_runtime
    )


def _failure_line(exc: Exception) -> str:
    """One line, ``Reason: message``, for the log and the termination message."""
    if isinstance(exc, ModelDownloadError):
        return server_failure_line(ServerFailure.MODEL_DOWNLOAD_FAILED, str(exc))
    return server_failure_line(ServerFailure.MODEL_LOAD_FAILED, f"{type(exc).__name__}: {exc}")


def _warm_up_sizes(max_batch_size: int) -> tuple[int, ...]:
    sizes = {1, max_batch_size}
    size = 2
    while size < max_batch_size:
        sizes.add(size)
        size *= 2
    return tuple(sorted(sizes))


async def _load(state: ServingState, loader: ModelLoader) -> None:
    settings = state.settings
    started = time.perf_counter()
    try:
        model = await asyncio.to_thread(loader, settings)
        await asyncio.to_thread(model.warm_up, _warm_up_sizes(settings.max_batch_size))
    except Exception as exc:
        state.load_error = _failure_line(exc)
        source = redact_url(settings.model_uri or str(settings.model_dir))
        if isinstance(exc, ModelDownloadError):  # a clear line, not a trace, says it all
            log.error("model failed to download", extra={"model": source, "error": str(exc)})
        else:
            log.exception("model failed to load", extra={"model": source})
        return
    metrics = state.metrics
    batcher = DynamicBatcher(
        model.predict,
        max_batch_size=settings.max_batch_size,
        max_latency_s=settings.max_latency_ms / 1000,
        max_queue_rows=settings.max_queue,
        on_batch=metrics.batch_size.observe,
        inline_below_s=settings.inline_model_below_ms / 1000,
    )
    batcher.start()
    metrics.queued_rows = lambda: batcher.queued_rows
    # TensorFlow leaves millions of long-lived objects; frozen, the collector stops walking
    # them on every full collection (pauses of 100+ ms under load otherwise).
    gc.collect()
    gc.freeze()
    state.model = model
    state.batcher = batcher
    elapsed = time.perf_counter() - started
    metrics.model_load_seconds.set(elapsed)
    metrics.model_ready.set(1)
    log.info(
        "model ready",
        extra={
            "model": model.name,
            "version": model.version,
            "runtime": model.runtime,
            "inputs": [spec.as_metadata() for spec in model.inputs],
            "load_seconds": round(elapsed, 3),
        },
    )


class ServingApp(FastAPI):
    """FastAPI, with the inference routes answered first by the raw ASGI fast path."""

    fast_path: InferenceFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast_path = self.fast_path
        route = fast_path.serves(scope) if fast_path is not None else None
        if route is not None:
            assert fast_path is not None
            await fast_path(route, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: ServeSettings, loader: ModelLoader = load_model) -> ServingApp:
    """Builds the app; the model loads when the app starts (its lifespan)."""
    metrics = ServerMetrics()
    state = ServingState(settings=settings, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        grpc_listener = GrpcListener(state)
        await grpc_listener.start()
        loading = asyncio.create_task(_load(state, loader))
        try:
            yield
        finally:
            state.draining = True
            metrics.model_ready.set(0)
            if not loading.done():
                loading.cancel()
            await grpc_listener.stop(settings.graceful_timeout_s)
            if state.batcher is not None:
                await state.batcher.stop()

    app = ServingApp(
        title="modelservice serving",
        version=__version__,
        description="KServe V1 and Open Inference Protocol (V2) over one dynamically batched "
        "TensorFlow SavedModel.",
        lifespan=lifespan,
        # The API's description is for developers: off unless asked (--docs).
        docs_url="/docs" if settings.docs else None,
        redoc_url="/redoc" if settings.docs else None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    app.state.serving = state
    errors.install(app)
    app.include_router(protocol_v2.router)
    app.include_router(protocol_v1.router)

    @app.get(
        "/",
        tags=["health"],
        summary="Liveness (KServe)",
        responses=openapi.responses(
            ok={
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"type": "string"}},
            }
        ),
    )
    async def root() -> Response:
        return payloads.json_response({"status": "alive"})

    if not settings.metrics_port:  # else served alone on its own port (server.py)

        @app.get(
            "/metrics",
            tags=["health"],
            summary="Prometheus metrics",
            response_class=PlainTextResponse,
            responses={
                200: {
                    "description": "Prometheus text exposition format 0.0.4",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        )
        async def prometheus(request: Request) -> Response:
            body, content_type = metrics.exposition()
            return Response(body, media_type=content_type)

    openapi.install(app, settings.model_name, lambda: state.model)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    token = read_token(settings.auth_token_file) if settings.auth_token_file is not None else None
    if token is not None:
        # Outermost: a refused request reaches neither the metrics nor the routes.
        app.add_middleware(BearerTokenMiddleware, token=token)
    app.fast_path = InferenceFastPath(state, token)
    return app


def serving_state(app: Any) -> ServingState:
    """The state of an app built by :func:`create_app` (for the server and tests)."""
    state: ServingState = app.state.serving
    return state
