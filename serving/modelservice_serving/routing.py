"""Fast routes for the two inference endpoints.

FastAPI resolves dependencies and walks the route list for every request; for one small
instance per request that costs as much as the model. The inference handlers read
everything from the raw request anyway, so they are also mounted as plain Starlette routes
at the front of the route list. The FastAPI routes of the same paths stay behind them and
only document the endpoints in OpenAPI (``/docs``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.routing import Match, Route
from starlette.types import Scope

from . import protocol_v1, protocol_v2


class FastRoute(Route):
    """A Starlette route that records itself in the scope, as FastAPI's routes do, so the
    metrics middleware labels requests by the route's path template."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def install(app: FastAPI) -> None:
    fast: list[Any] = [
        FastRoute("/v1/models/{name}:predict", protocol_v1.serve_predict, methods=["POST"]),
        FastRoute("/v2/models/{name}/infer", protocol_v2.serve_infer, methods=["POST"]),
        FastRoute(
            "/v2/models/{name}/versions/{version}/infer", protocol_v2.serve_infer, methods=["POST"]
        ),
    ]
    app.router.routes[:0] = fast
