"""``python -m localcluster``: the local cluster's command line (see the package docstring)."""

from __future__ import annotations

import argparse
from pathlib import Path

import localcluster
from localcluster import realnode
from localcluster.addons import start_autoscalers
from localcluster.controlplane import down, healthy, up
from localcluster.kwok import nodes
from localcluster.state import load_state


def main() -> None:
    parser = argparse.ArgumentParser(description=(localcluster.__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "command", choices=["up", "down", "nodes", "status", "load-image", "autoscalers"]
    )
    parser.add_argument("images", nargs="*", help="for load-image: Docker image names")
    parsed = parser.parse_args()
    command = parsed.command
    if command == "load-image":
        state = load_state()
        if not state or not state.get("real_node"):
            raise SystemExit("[localcluster] this cluster has no real node to load images into")
        for image in parsed.images:
            realnode.load_image(image)
    elif command == "up":
        up()
    elif command == "autoscalers":
        # Add KEDA and Karpenter (as built, no build) to the running cluster.
        state = load_state()
        if not state or state.get("external") or not healthy(state):
            raise SystemExit("[localcluster] no healthy local cluster to add autoscalers to")
        start_autoscalers(Path(str(state["bin"])))
    elif command == "down":
        down()
    elif command == "nodes":
        nodes()
    else:
        state = load_state()
        raise SystemExit(0 if state and healthy(state) else 1)


if __name__ == "__main__":
    main()
