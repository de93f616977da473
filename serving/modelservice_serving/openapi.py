"""What the OpenAPI document says about each endpoint: bodies, answers and their errors.

The inference handlers read the raw request (see ``routing``), so FastAPI cannot infer
their schemas: they are written here, to match what the handlers accept and answer. Every
error is ``{"error": "..."}`` with the status codes each endpoint can really return; the path
parameter ``name`` lists the one model served (a document per server).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from .model import ServedModel

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "why the request failed"}},
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "string", "example": "1"},
    }
}
_ERRORS: dict[int, str] = {
    400: "Malformed body: not JSON, not UTF-8, or a field of the wrong type",
    404: "No such model (or version) served here",
    408: "The request's head or body did not arrive in time",
    413: "Body, or rows, beyond the server's limit",
    422: "Tensors that do not fit the model's signature (names, datatype, shape, values)",
    431: "Request line and headers beyond the server's limit",
    503: "Model not loaded yet, or the server is overloaded: retry after Retry-After",
}
DATATYPES = ["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]


def responses(
    *codes: int, ok: dict[str, Any] | None = None, ok_description: str = "Success"
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: 200 with ``ok`` as its JSON schema, then the error codes."""
    documented: dict[int | str, dict[str, Any]] = {}
    if ok is not None:
        documented[200] = {
            "description": ok_description,
            "content": {"application/json": {"schema": ok}},
        }
    for code in codes:
        documented[code] = {
            "description": _ERRORS[code],
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
        if code == 503:
            documented[code]["headers"] = _RETRY_AFTER
    return documented


def readiness(answer: dict[str, Any], *codes: int) -> dict[int | str, dict[str, Any]]:
    """A readiness endpoint: the same body with 200 (ready) or 503 (not yet, or draining)."""
    content = {"application/json": {"schema": answer}}
    documented: dict[int | str, dict[str, Any]] = {
        200: {"description": "Ready", "content": content},
        503: {"description": "Not ready: loading, or draining for shutdown", "content": content},
    }
    for code in codes:
        documented[code] = responses(code)[code]
    return documented


def request_body(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra=`` of a route whose handler reads the raw body."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


READY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ready"],
    "properties": {"ready": {"type": "boolean"}},
}
MODEL_READY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "ready"],
    "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
}


def install(app: FastAPI, model_name: str, loaded: Callable[[], ServedModel | None]) -> None:
    """The document names the served model in every ``{name}`` path parameter and, once the
    model is loaded, its version, input names, datatypes and ranks, and output names."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        document = copy.deepcopy(generate())  # FastAPI caches the generated document
        model = loaded()
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                for parameter in operation.get("parameters", []):
                    if parameter["in"] != "path":
                        continue
                    if parameter["name"] == "name":
                        parameter["schema"] = {"type": "string", "enum": [model_name]}
                    elif parameter["name"] == "version" and model is not None:
                        parameter["schema"] = {"type": "string", "enum": [model.version]}
                # FastAPI's default 422 (its validation error) cannot happen: every
                # parameter is a plain string and bodies are read raw.
                if "HTTPValidationError" in str(operation["responses"].get("422", {})):
                    del operation["responses"]["422"]
                if model is not None:
                    _describe_signature(operation, model)
        schemas = document.get("components", {}).get("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _describe_signature(operation: dict[str, Any], model: ServedModel) -> None:
    """Narrows a V2 infer body to the model's inputs and outputs."""
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    properties = body.get("schema", {}).get("properties", {})
    if "inputs" not in properties or "outputs" not in properties:
        return
    tensor = properties["inputs"]["items"]["properties"]
    tensor["name"] = {"type": "string", "enum": [spec.name for spec in model.inputs]}
    tensor["datatype"] = {"type": "string", "enum": sorted({s.datatype for s in model.inputs})}
    ranks = {len(spec.shape) for spec in model.inputs}
    tensor["shape"] = {**tensor["shape"], "minItems": min(ranks), "maxItems": max(ranks)}
    names = [spec.name for spec in model.outputs]
    properties["outputs"]["items"]["properties"]["name"] = {"type": "string", "enum": names}
