"""The one module that talks to the Kubernetes API (kubernetes_asyncio, plain JSON dicts).

Objects travel as plain dicts in their wire form, so builders, diagnosis and tests never see
generated client models. Creating an object that exists is not an error: the caller gets the
existing object back and compares.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from .metrics import API_ERRORS
from .names import GROUP, MANAGED_BY, PLURAL, VERSION

__all__ = ["KINDS", "ApiError", "Kube", "Resource", "connect"]

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30


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
    "Job": Resource("batch/v1", "jobs"),
    "HorizontalPodAutoscaler": Resource("autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": Resource("policy/v1", "poddisruptionbudgets"),
    "ModelService": Resource(f"{GROUP}/{VERSION}", PLURAL),
}


class ApiError(Exception):
    """An API call failed with an HTTP status other than the ones handled here."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


async def connect() -> Kube:
    """Load in-cluster config, else the kubeconfig, and return a client."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
    return Kube(client.ApiClient())


class Kube:
    """Thin async access to the API for the reconciler."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

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
            return await self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                response_types_map={200: response, 201: response, 202: response},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        except ApiException as exc:
            if (exc.status or 0) not in expected:
                API_ERRORS.labels(status=str(exc.status or 0)).inc()
            raise ApiError(exc.status or 0, str(exc.body or exc.reason)[:500]) from exc
        except Exception:  # no response at all (timeout, connection refused): status 0
            API_ERRORS.labels(status="0").inc()
            raise

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

    async def json_patch(
        self, kind: str, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Apply an RFC 6902 JSON patch and return the object."""
        obj: dict[str, Any] = await self._call(
            "PATCH",
            KINDS[kind].path(namespace, name),
            body=ops,
            query=_field_manager(),
            content_type="application/json-patch+json",
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
        """Merge-patch ``status`` of a ModelService through the status subresource."""
        obj: dict[str, Any] = await self._call(
            "PATCH",
            KINDS["ModelService"].path(namespace, name, "status"),
            body={"status": status},
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
            try:
                if resp.status != 200:
                    log.debug("no log for pod %s/%s: HTTP %s", namespace, name, resp.status)
                    return None
                text: str = await resp.text()
            finally:
                resp.release()
        except Exception as exc:  # a kubelet that does not answer is not our failure
            log.debug("no log for pod %s/%s: %r", namespace, name, exc)
            return None
        return text

    async def event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Record a core/v1 Event about ``owner`` (a ModelService)."""
        meta = owner["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
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
            "message": message[:1024],
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


def _field_manager() -> list[tuple[str, str]]:
    return [("fieldManager", MANAGED_BY)]
