"""Docker for the image tests: started if missing, a local base image, the serving image.

Idempotent and cached: a running daemon, an existing base image and Docker's layer cache
are reused, so a fresh root machine (CI) sets itself up and later runs are fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "serving" / "scripts" / "bootstrap-base-image.sh"
BUILD = REPO / "serving" / "scripts" / "build-image.sh"
LOCAL_BASE = "local/python-base:bookworm"
IMAGE = "modelservice-serving:dev"


def docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=60)
    return probe.returncode == 0


def can_bootstrap() -> bool:
    """Root can install and start Docker; anyone else needs a running daemon."""
    return os.geteuid() == 0 or docker_ready()


def ensure_base_image() -> str:
    """Starts Docker if needed and bootstraps the local base image (no registry needed)."""
    subprocess.run(["bash", str(BOOTSTRAP)], check=True, timeout=1800)
    return LOCAL_BASE


def build_image(tag: str = IMAGE, base_image: str | None = None) -> str:
    """Builds the serving image; Docker's layer cache keeps rebuilds to the code layer."""
    env = {**os.environ, "BASE_IMAGE": base_image or ensure_base_image()}
    subprocess.run(["bash", str(BUILD), tag], check=True, env=env, timeout=1800)
    return tag


def docker(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )
