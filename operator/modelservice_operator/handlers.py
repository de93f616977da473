"""Thin kopf handlers: create, update, resume and a timer all call the one reconcile."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from .kube import ApiError, Kube, connect
from .names import GROUP, PLURAL, VERSION
from .reconciler import reconcile
from .settings import get_settings

__all__ = ["configure", "on_change", "on_timer"]

log = logging.getLogger(__name__)
STORAGE_PREFIX = "kopf.modelservice.dev"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping in annotations (status is ours), quiet events, peering."""
    config = get_settings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STORAGE_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    if config.peering:
        settings.peering.name = config.peering
        settings.peering.mandatory = True
    else:
        settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    memo["kube"] = await connect()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    """Close the API client."""
    kube = memo.get("kube")
    if isinstance(kube, Kube):
        await kube.close()


async def _reconcile(body: kopf.Body, memo: kopf.Memo) -> None:
    kube = memo["kube"]
    assert isinstance(kube, Kube)
    await reconcile(kube, dict(body), get_settings())


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def on_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A ModelService appeared, changed, or was found at startup: reconcile it."""
    try:
        await _reconcile(body, memo)
    except ApiError as exc:
        raise kopf.TemporaryError(f"API error, retrying: {exc}", delay=5) from exc


@kopf.timer(GROUP, VERSION, PLURAL, interval=get_settings().reconcile_interval_s)
async def on_timer(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Periodic level-based resync: children and pods move without touching the parent."""
    try:
        await _reconcile(body, memo)
    except ApiError as exc:
        log.warning("resync of %s failed: %s", body.get("metadata", {}).get("name"), exc)
