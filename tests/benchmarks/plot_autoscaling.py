"""Draw the KEDA e2e run's timeline: replicas, in-flight requests and p99 latency over time.

    python tests/benchmarks/plot_autoscaling.py [timeline.json] [out.png]

Reads what tests/e2e/test_keda_real_node.py wrote (default
tests/benchmarks/autoscaling-timeline.json) and writes docs/autoscaling.png.
Needs matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else REPO / "tests" / "benchmarks" / ("autoscaling-timeline.json")
    )
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "docs" / "autoscaling.png"
    run = json.loads(source.read_text())
    samples = run["samples"]
    t = [s["t"] for s in samples]
    fig, (top, middle, bottom) = plt.subplots(3, 1, sharex=True, figsize=(9, 7))
    top.step(t, [s["replicas"] for s in samples], where="post", label="desired")
    top.step(t, [s["ready"] for s in samples], where="post", label="ready")
    top.set_ylabel("replicas")
    top.legend(loc="upper right")
    middle.plot(t, [s["inflight"] for s in samples], color="tab:orange")
    middle.set_ylabel("in-flight requests\n(KEDA's sum)")
    bottom.plot(t, [s["p99_ms"] for s in samples], color="tab:red")
    bottom.set_ylabel("client p99 (ms, 5 s window)")
    bottom.set_xlabel("seconds")
    for axis in (top, middle, bottom):
        axis.axvspan(run["load_start_s"], run["load_stop_s"], color="0.9")
        axis.grid(alpha=0.3)
    title = (
        f"KEDA on in-flight requests: out {run['scale_out_s']} s, in {run['scale_in_s']} s, "
        f"{run['ok']} ok / {run['failed']} failed"
    )
    if "first_request_after_idle_ms" in run:
        title += (
            f"\nfirst request after {run['idle_s']} s idle at 1 replica: "
            f"{run['first_request_after_idle_ms']} ms"
        )
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    print(target)


if __name__ == "__main__":
    main()
