"""Where the local cluster keeps its state (``.cluster/`` of the checkout) and how it reads it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STATE_DIR = Path(os.environ.get("MSO_CLUSTER_DIR", REPO / ".cluster"))
# The folder that holds this package: a child ``python -m localcluster`` needs it on its path.
PACKAGE_PARENT = HERE.parent


def cli_argv(*args: str) -> list[str]:
    """The argv of ``python -m localcluster ARGS`` with this interpreter."""
    return [sys.executable, "-m", "localcluster", *args]


def cli_env(**overrides: str) -> dict[str, str]:
    """The environment for a ``python -m localcluster`` child: the package importable."""
    path = os.pathsep.join(p for p in (str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **overrides}


def load_state() -> dict[str, object] | None:
    try:
        return dict(json.loads((STATE_DIR / "state.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save_state(state: dict[str, object]) -> None:
    """Write the cluster's state record."""
    (STATE_DIR / "state.json").write_text(json.dumps(state, indent=2))
