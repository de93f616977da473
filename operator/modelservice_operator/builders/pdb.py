"""The predictor's PodDisruptionBudget, only when more than one replica is the floor."""

from __future__ import annotations

from typing import Any

from ..models import ServingSpec
from ..names import ANNOTATION_SPEC_HASH, predictor_name, predictor_selector, stable_hash
from .common import Owner, child_metadata

__all__ = ["build_pdb"]


def build_pdb(owner: Owner, serving: ServingSpec) -> dict[str, Any] | None:
    """Return the PDB (at most one pod voluntarily down), or None when minReplicas is 1."""
    if serving.min_replicas <= 1:
        return None
    spec: dict[str, Any] = {
        "maxUnavailable": 1,
        "selector": {"matchLabels": predictor_selector(owner.name)},
    }
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(
            owner,
            predictor_name(owner.name),
            "predictor",
            annotations={ANNOTATION_SPEC_HASH: stable_hash(spec)},
        ),
        "spec": spec,
    }
