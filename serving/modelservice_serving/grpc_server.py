"""The gRPC listener beside the HTTP one, on ``--grpc-port``, in the same event loop.

It serves the Open Inference Protocol (:mod:`.protocol_grpc`) and gRPC health checking
(:mod:`.health_grpc`, for ``grpc`` probes), with the event loop's own HTTP/2 server
(:mod:`.grpc_loop`, the default) or grpcio's (``--grpc-server grpcio``).

The app's lifespan starts it before the model loads (so ServerLive answers at once) and
stops it on shutdown before the batcher drains: in-flight RPCs finish within the graceful
timeout, new ones are refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from . import health_grpc, protocol_grpc
from .access import read_token
from .access_grpc import BearerTokenInterceptor
from .grpc_loop import GrpcLoopServer
from .metrics import GrpcStats
from .state import ServingState

log = logging.getLogger(__name__)


def observed(
    service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]], stats: GrpcStats
) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """``handlers`` counted and timed in ``stats`` by status code, as the event loop's
    server counts its calls (calls the token interceptor refuses never reach them)."""
    counted = {}
    for method, handler in handlers.items():
        labels = GrpcStats.method_labels(
            f"/{service}/{method}", handler.request_streaming, handler.response_streaming
        )
        kind = "unary_unary" if not handler.request_streaming else "stream_stream"
        if handler.response_streaming != handler.request_streaming:
            raise ValueError(f"{method}: only unary and bidi-streaming methods are counted")
        # grpc's handler records are named tuples: swap the behaviour, keep the rest.
        counted[method] = handler._replace(  # type: ignore[attr-defined]
            **{kind: _timed(getattr(handler, kind), labels, stats)}
        )
    return counted


def _timed(
    behaviour: Callable[[Any, Any], Any], labels: tuple[str, str, str], stats: GrpcStats
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]:
    async def timed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            response = await behaviour(request, context)
            code = grpc.StatusCode.OK
            return response
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = context.code() or grpc.StatusCode.UNKNOWN  # what abort() set
            raise
        finally:
            stats.observe(labels, code.value[0], time.perf_counter() - started)

    return timed


class GrpcListener:
    """Owns the ``grpc.aio`` server serving :mod:`.protocol_grpc` for one app."""

    def __init__(self, state: ServingState) -> None:
        self.state = state
        self._server: grpc.aio.Server | None = None
        self._loop_server: GrpcLoopServer | None = None

    async def start(self) -> int:
        """Binds and starts; returns the bound port (``--grpc-port=0`` picks a free one)."""
        settings = self.state.settings
        if settings.grpc_server == "loop":
            token = read_token(settings.auth_token_file) if settings.auth_token_file else None
            self._loop_server = GrpcLoopServer(self.state, token)
            try:
                port = await self._loop_server.start(settings.host, settings.grpc_port)
            except OSError as exc:  # as grpcio says it: the port is taken (or not ours)
                raise RuntimeError(
                    f"cannot listen for gRPC on {settings.host}:{settings.grpc_port}: {exc}"
                ) from exc
            self.state.grpc_port = port
            log.info("grpc listening", extra={"port": port, "server": "loop"})
            return port
        interceptors = []
        if settings.auth_token_file is not None:  # the same token as the HTTP side
            interceptors.append(BearerTokenInterceptor(read_token(settings.auth_token_file)))
        server = grpc.aio.server(
            interceptors=interceptors,
            # Past it grpcio answers RESOURCE_EXHAUSTED before the handler runs: the gRPC
            # side's --max-in-flight (a stream counts once, whatever it carries).
            maximum_concurrent_rpcs=settings.grpc_max_in_flight,
            options=[
                # grpcio shares a port with any other process that binds it (SO_REUSEPORT)
                # unless told not to: a second server on the port must fail, not split traffic.
                ("grpc.so_reuseport", 0),
                # The same bound on a request as the HTTP side's body limit.
                ("grpc.max_receive_message_length", settings.max_body_bytes),
            ],
        )
        stats = self.state.metrics.grpc
        server.add_generic_rpc_handlers(
            tuple(
                grpc.method_handlers_generic_handler(
                    service, observed(service, handlers(self.state), stats)
                )
                for service, handlers in (
                    (protocol_grpc.SERVICE, protocol_grpc.method_handlers),
                    (health_grpc.SERVICE, health_grpc.method_handlers),
                )
            )
        )
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
        await server.start()
        self._server = server
        self.state.grpc_port = port
        log.info("grpc listening", extra={"port": port})
        return port

    async def stop(self, grace_s: float) -> None:
        """Refuses new RPCs and lets running ones finish for up to ``grace_s``."""
        if self._loop_server is not None:
            await self._loop_server.stop(grace_s)
            self._loop_server = None
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
