"""The predictor's PodDisruptionBudget, only when more than one replica is the floor."""

from __future__ import annotations

from typing import Any

from ..models import ServingSpec
from ..names import predictor_selector
from .common import Owner, predictor_child

__all__ = ["build_pdb"]


def build_pdb(owner: Owner, serving: ServingSpec) -> dict[str, Any] | None:
    """Return the PDB (at most one pod voluntarily down), or None when minReplicas is 1."""
    if serving.min_replicas <= 1:
        return None
    spec: dict[str, Any] = {
        "maxUnavailable": 1,
        "selector": {"matchLabels": predictor_selector(owner.name)},
    }
    return predictor_child(owner, "policy/v1", "PodDisruptionBudget", spec)
