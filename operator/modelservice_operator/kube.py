"""The one module that talks to the Kubernetes API (kubernetes_asyncio, plain JSON dicts).

Objects travel as plain dicts in their wire form, so builders, diagnosis and tests never see
generated client models. Creating an object that exists is not an error: the caller gets the
existing object back and compares.

The client knows nothing of metrics: whoever creates it passes an ``observer`` that is told
the method and HTTP status of every call (``metrics.observe_api_call`` counts them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from modelservice_serving.redact import redact_json, redact_text

from .backoff import parse_retry_after
from .names import GROUP, MANAGED_BY, PLURAL, VERSION

__all__ = ["KINDS", "ApiError", "ApiObserver", "Kube", "Resource", "connect"]

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30

# Told of every API call: (HTTP method, status or 0 for no response, expected by the caller).
ApiObserver = Callable[[str, int, bool], None]


def _ignore(_method: str, _status: int, _expected: bool) -> None:
    return None


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    api_version: str
    plural: str

    def path(self, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        """The REST path of a collection, an object, or an object's subresource."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        path = f"{prefix}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if sub is not None:
            path += f"/{sub}"
        return path


KINDS: dict[str, Resource] = {
    "Pod": Resource("v1", "pods"),
    "Service": Resource("v1", "services"),
    "PersistentVolumeClaim": Resource("v1", "persistentvolumeclaims"),
    "Event": Resource("v1", "events"),
    "Deployment": Resource("apps/v1", "deployments"),
    "NetworkPolicy": Resource("networking.k8s.io/v1", "networkpolicies"),
    "Job": Resource("batch/v1", "jobs"),
    "HorizontalPodAutoscaler": Resource("autoscaling/v2", "horizontalpodautoscalers"),
    "ScaledObject": Resource("keda.sh/v1alpha1", "scaledobjects"),
    "PodDisruptionBudget": Resource("policy/v1", "poddisruptionbudgets"),
    "ModelService": Resource(f"{GROUP}/{VERSION}", PLURAL),
    "Lease": Resource("coordination.k8s.io/v1", "leases"),
}


class ApiError(Exception):
    """An API call failed with an HTTP status other than the ones handled here.

    ``retry_after`` holds the seconds of the response's ``Retry-After`` header (429 Too Many
    Requests from API Priority and Fairness, 503 from an overloaded server), else None.
    """

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.retry_after = retry_after


# What makes aiohttp's ``trust_env`` matter: proxies from the environment, or a netrc file.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy")


def environment_configures_http(environ: Mapping[str, str], home: Path) -> bool:
    """Whether proxies or a netrc file are configured (``trust_env`` would use them)."""
    if any(environ.get(name) or environ.get(name.upper()) for name in PROXY_VARIABLES):
        return True
    netrc = environ.get("NETRC")
    return Path(netrc).is_file() if netrc else (home / ".netrc").is_file()


async def connect(observer: ApiObserver | None = None) -> Kube:
    """Load in-cluster config, else the kubeconfig, and return a client."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
    api = client.ApiClient()
    if not environment_configures_http(os.environ, Path.home()):
        # kubernetes_asyncio always opens its session with trust_env=True, and aiohttp then
        # looks up proxies and ~/.netrc in a worker thread before every request: two thread
        # hops per API call for nothing when neither is configured (py-spy: ~5% of the
        # operator's CPU in a burst). With either configured, it keeps trusting them.
        api.rest_client.pool_manager._trust_env = False
    return Kube(api, observer)


class Kube:
    """Thin async access to the API for the reconciler."""

    def __init__(self, api: client.ApiClient, observer: ApiObserver | None = None) -> None:
        self.api = api
        self.observer: ApiObserver = observer or _ignore

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.api.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        response: str = "object",
        expected: tuple[int, ...] = (),
    ) -> Any:
        """One API call; statuses in ``expected`` are the caller's flow, not counted errors."""
        try:
            data, status, _headers = await self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                response_types_map={200: response, 201: response, 202: response},
                auth_settings=["BearerToken"],
                _return_http_data_only=False,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        except ApiException as exc:
            status = exc.status or 0
            self.observer(method, status, status in expected)
            raise ApiError(
                status, str(exc.body or exc.reason)[:500], _retry_after(exc.headers)
            ) from exc
        except Exception:  # no response at all (timeout, connection refused): status 0
            self.observer(method, 0, False)
            raise
        self.observer(method, int(status), True)
        return data

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Return the object, or None when it does not exist."""
        try:
            obj: dict[str, Any] = await self._call(
                "GET", KINDS[kind].path(namespace, name), expected=(404,)
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    async def serves(self, api_version: str, plural: str) -> bool:
        """Whether the API serves ``plural`` in the group/version (discovery, not RBAC)."""
        try:
            found = await self._call("GET", f"/apis/{api_version}", expected=(404, 503))
        except ApiError as exc:
            if exc.status in (404, 503):  # 503: an aggregated API that is down
                return False
            raise
        return any(r.get("name") == plural for r in found.get("resources") or [])

    async def list_objects(
        self, kind: str, namespace: str, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Return the objects of ``kind`` in ``namespace`` matching ``labels``."""
        query = []
        if labels:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in labels.items())))
        result = await self._call("GET", KINDS[kind].path(namespace), query=query)
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    async def list_events(self, namespace: str, reason: str) -> list[dict[str, Any]]:
        """Return the core/v1 Events about Pods in ``namespace`` with this ``reason``."""
        query = [("fieldSelector", f"involvedObject.kind=Pod,reason={reason}")]
        result = await self._call("GET", KINDS["Event"].path(namespace), query=query)
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    async def create(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create ``manifest``; on 409 AlreadyExists return the existing object.

        Returns ``(object, created)``.
        """
        meta = manifest["metadata"]
        path = KINDS[manifest["kind"]].path(meta["namespace"])
        try:
            obj = await self._call(
                "POST", path, body=manifest, query=_field_manager(), expected=(409,)
            )
            return obj, True
        except ApiError as exc:
            if exc.status != 409:
                raise
        existing = await self.get(manifest["kind"], meta["namespace"], meta["name"])
        if existing is None:  # deleted in between: the next reconcile creates it again
            raise ApiError(409, f"{manifest['kind']} {meta['name']} exists but cannot be read")
        return existing, False

    async def create_new(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """POST ``manifest`` under the operator's field manager; 409 when its name is taken.

        For children written once and never re-applied (a Job, a PVC): the API server spends
        1.3-1.8x less on a POST of a new Job than on a server-side apply of it (measured on
        the local cluster, tests/benchmarks/operator.md), and no field is ever applied again
        for a second manager to fight over.
        """
        meta = manifest["metadata"]
        obj: dict[str, Any] = await self._call(
            "POST",
            KINDS[manifest["kind"]].path(meta["namespace"]),
            body=manifest,
            query=_field_manager(),
            expected=(409,),
        )
        return obj

    async def apply(
        self, manifest: dict[str, Any], *, force: bool, manager: str = MANAGED_BY
    ) -> dict[str, Any]:
        """Server-side apply ``manifest`` under field manager ``manager``; return the object.

        ``force`` takes over fields another manager set (only for fields we own); without
        it such a field is a 409 conflict.
        """
        meta = manifest["metadata"]
        query = [("fieldManager", manager)]
        if force:
            query.append(("force", "true"))
        obj: dict[str, Any] = await self._call(
            "PATCH",
            KINDS[manifest["kind"]].path(meta["namespace"], meta["name"]),
            body=manifest,
            query=query,
            content_type="application/apply-patch+yaml",
        )
        return obj

    async def replace(
        self, kind: str, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """PUT ``body`` (with its ``resourceVersion``: 409 when someone wrote in between)."""
        obj: dict[str, Any] = await self._call(
            "PUT",
            KINDS[kind].path(namespace, name),
            body=body,
            query=_field_manager(),
            expected=(409,),
        )
        return obj

    async def merge_patch(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply an RFC 7386 merge patch and return the object."""
        obj: dict[str, Any] = await self._call(
            "PATCH",
            KINDS[kind].path(namespace, name),
            body=patch,
            query=_field_manager(),
            content_type="application/merge-patch+json",
        )
        return obj

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete an object (background propagation); absent is fine."""
        try:
            await self._call(
                "DELETE",
                KINDS[kind].path(namespace, name),
                body={"propagationPolicy": "Background"},
                expected=(404,),
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch ``status`` of a ModelService through the status subresource.

        Every URL in it is redacted (no user info, no query string): status is readable by
        whoever may read the ModelService.
        """
        obj: dict[str, Any] = await self._call(
            "PATCH",
            KINDS["ModelService"].path(namespace, name, "status"),
            body={"status": redact_json(status)},
            query=_field_manager(),
            content_type="application/merge-patch+json",
        )
        return obj

    async def pod_log(self, namespace: str, name: str, tail: int) -> str | None:
        """Return the last ``tail`` lines of a pod's log, or None when there is none.

        Simulated (kwok) pods and pods not yet started have no log; that is not an error.
        """
        path = KINDS["Pod"].path(namespace, name, "log")
        try:
            resp = await self.api.call_api(
                path,
                "GET",
                query_params=[("tailLines", str(tail))],
                header_params={"Accept": "text/plain"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
            self.observer("GET", resp.status, resp.status in (200, 400, 404))
            try:
                if resp.status != 200:
                    log.debug("no log for pod %s/%s: HTTP %s", namespace, name, resp.status)
                    return None
                text: str = await resp.text()
            finally:
                resp.release()
        except Exception as exc:  # a kubelet that does not answer is not our failure
            self.observer("GET", 0, False)
            log.debug("no log for pod %s/%s: %r", namespace, name, exc)
            return None
        return text

    async def event(
        self,
        owner: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        at: datetime | None = None,
    ) -> None:
        """Record a core/v1 Event about ``owner`` (a ModelService), that happened ``at``
        (default: now)."""
        meta = owner["metadata"]
        now = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": owner.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": owner.get("kind", "ModelService"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": redact_text(message)[:1024],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": MANAGED_BY},
            "reportingComponent": MANAGED_BY,
            "reportingInstance": MANAGED_BY,
        }
        try:
            await self._call("POST", KINDS["Event"].path(meta["namespace"]), body=body)
        except ApiError as exc:  # an event is best effort
            log.warning("cannot record event %s on %s: %s", reason, meta["name"], exc)


def _retry_after(headers: Any) -> float | None:
    """The Retry-After of a failed response, in seconds (headers may be absent)."""
    if not headers:
        return None
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    return parse_retry_after(value if isinstance(value, str) else None)


def _field_manager() -> list[tuple[str, str]]:
    return [("fieldManager", MANAGED_BY)]
