"""Decide, children half (pure): the desired children, and which of them need a write.

A new kind of child is one builder plus one entry in :func:`desired_serving` (and its kind in
:data:`cache.CHILD_KINDS`, so that it is watched). Everything else follows from the list:

- a child whose name is taken by an object this ModelService does not control (a leftover
  of a deleted namesake, someone else's object) is never touched: it is a ``ChildConflict``;
- an absent child is created by server-side apply, without forcing, so that an unexpected
  namesake answers with a conflict instead of being taken over (a child written once and
  never re-applied, a Job or a PVC, by a plain POST: a namesake answers 409 the same way);
- a present child is re-applied (forcing: the fields are ours) only when its spec-hash
  annotation or labels differ from the desired ones: nothing is written when they match;
- a child of a :data:`PRUNABLE` kind that is no longer desired is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..autoscaling import AutoscalerChoice
from ..builders.common import ModelVolume, Owner, PodDefaults
from ..builders.deployment import build_deployment
from ..builders.hpa import build_hpa
from ..builders.networkpolicy import build_network_policy
from ..builders.pdb import build_pdb
from ..builders.scaledobject import build_scaled_object
from ..builders.service import build_service
from ..diagnosis import Stuck
from ..models import SecretReference, ServingSpec
from ..names import ANNOTATION_SPEC_HASH, MANAGED_BY
from .observe import Observed, controlled_by
from .training import Delete

__all__ = [
    "INITIAL_REPLICAS_MANAGER",
    "PRUNABLE",
    "Child",
    "Write",
    "desired_serving",
    "plan_children",
]

# Owns ``spec.replicas`` of a new Deployment and nothing else, and never applies again: the
# operator's own apply leaves replicas out, so the HPA alone moves them afterwards.
INITIAL_REPLICAS_MANAGER = f"{MANAGED_BY}-initial-replicas"
# Kinds whose children are deleted when the desired list no longer has them (an HPA and a
# ScaledObject on one Deployment would fight: only the chosen autoscaler stays).
PRUNABLE = ("PodDisruptionBudget", "HorizontalPodAutoscaler", "ScaledObject")


class _Named:
    """A manifest's kind and name, for a value holding ``manifest``."""

    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        """The object's kind."""
        return str(self.manifest["kind"])

    @property
    def name(self) -> str:
        """The object's name."""
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class Child(_Named):
    """One desired child.

    ``mutable=False``: created once, never re-applied (Job, PVC). ``usable_unowned``: an
    object of this name with no controller at all is used as it is, never written nor
    adopted (a model store kept when its first ModelService was deleted).
    """

    manifest: dict[str, Any]
    mutable: bool = True
    usable_unowned: bool = False


@dataclass(frozen=True)
class Write(_Named):
    """One server-side apply, or with ``post`` the creation of a write-once child."""

    manifest: dict[str, Any]
    force: bool
    creates: bool
    manager: str = MANAGED_BY
    post: bool = False


def desired_serving(
    owner: Owner,
    serving: ServingSpec,
    version: int | None,
    model_dir: str,
    volume: ModelVolume | None,
    defaults: PodDefaults,
    model_uri: str | None,
    model_credentials: SecretReference | None,
    autoscaler: AutoscalerChoice,
    cluster_domain: str = "cluster.local",
    keda_namespace: str = "keda",
) -> list[Child]:
    """The predictor's children, in the order they are applied."""
    keda = autoscaler.kind == "ScaledObject"
    scaler = (
        build_scaled_object(owner, serving, cluster_domain) if keda else build_hpa(owner, serving)
    )
    # KEDA's operator scrapes the metrics port of every predictor pod it scales.
    scrapers = [keda_namespace] if keda else []
    children = [
        Child(
            build_deployment(
                owner,
                serving,
                version,
                model_dir,
                volume,
                defaults,
                model_uri=model_uri,
                model_credentials=model_credentials,
            )
        ),
        Child(build_service(owner)),
        Child(build_network_policy(owner, serving, scrapers)),
        Child(scaler),
    ]
    pdb = build_pdb(owner, serving)
    if pdb is not None:
        children.append(Child(pdb))
    return children


def _controlled(obj: dict[str, Any]) -> bool:
    return any(r.get("controller") for r in obj["metadata"].get("ownerReferences") or [])


def _drifted(observed: dict[str, Any], desired: dict[str, Any]) -> bool:
    have = observed["metadata"]
    want = desired["metadata"]
    want_hash = (want.get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
    have_hash = (have.get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
    if want_hash is not None and want_hash != have_hash:
        return True
    labels = have.get("labels") or {}
    return any(labels.get(k) != v for k, v in (want.get("labels") or {}).items())


def _without_replicas(manifest: dict[str, Any]) -> dict[str, Any]:
    if manifest["kind"] != "Deployment":
        return manifest
    spec = {k: v for k, v in manifest["spec"].items() if k != "replicas"}
    return {**manifest, "spec": spec}


def _initial_replicas(manifest: dict[str, Any]) -> Write | None:
    replicas = manifest["spec"].get("replicas")
    if manifest["kind"] != "Deployment" or replicas in (None, 1):
        return None
    meta = manifest["metadata"]
    body = {
        "apiVersion": manifest["apiVersion"],
        "kind": "Deployment",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": replicas},
    }
    return Write(body, force=False, creates=False, manager=INITIAL_REPLICAS_MANAGER)


def conflict(kind: str, name: str) -> Stuck:
    """The problem of a child name that an object we do not control holds."""
    return Stuck(
        "ChildConflict",
        f"{kind} {name} exists and is not controlled by this ModelService (a leftover of a "
        "deleted namesake, or someone else's); waiting for it to be removed",
    )


def plan_children(
    obs: Observed, children: list[Child], prune: bool
) -> tuple[list[Write], list[Delete], Stuck | None]:
    """The writes that bring ``children`` about, the deletes, and the first conflict."""
    writes: list[Write] = []
    deletes: list[Delete] = []
    problem: Stuck | None = None
    for child in children:
        observed = obs.named(child.kind, child.name)
        if observed is not None and not controlled_by(observed, obs.owner.uid):
            if child.usable_unowned and not _controlled(observed):
                continue
            problem = problem or conflict(child.kind, child.name)
            continue
        if observed is None:
            manifest = _without_replicas(child.manifest)
            writes.append(Write(manifest, force=False, creates=True, post=not child.mutable))
            initial = _initial_replicas(child.manifest)
            if initial is not None:
                writes.append(initial)
        elif observed["metadata"].get("deletionTimestamp"):
            continue  # ours, going: created again once it is gone
        elif child.mutable and _drifted(observed, child.manifest):
            writes.append(Write(_without_replicas(child.manifest), force=True, creates=False))
    if prune:
        wanted = {(c.kind, c.name) for c in children}
        for kind in PRUNABLE:
            for obj in obs.owned(kind):
                name = obj["metadata"]["name"]
                if (kind, name) not in wanted and not obj["metadata"].get("deletionTimestamp"):
                    deletes.append(Delete(kind, name, "", f"{kind} {name} is no longer needed"))
    return writes, deletes, problem
