"""`make demo`, run as users run it: twice in a row, then with its ModelService recreated.

The demo (``hack/localcluster/demo.py``) installs the operator by Helm, trains, gates and
serves the digits sample on the real node and predicts through the Service. A second run
over the first must pass again (once it failed with ``OutputExists``), and a ModelService
deleted and recreated over the model store it left must train the next version rather than
collide with the versions the store holds.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from localcluster.kubectl import KubeCluster
from localcluster.state import cli_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

NAMESPACE = "mso-demo"  # the demo's own (localcluster.demo.NAMESPACE)
TRAINED = re.compile(r"trained and promoted version (\d+): accuracy ([0-9.]+)")
PREDICTED = re.compile(r"all (\d+) held-out digits through the Service \(V2\): (\d+) right")


def run_demo(*args: str) -> str:
    """One ``make demo`` (the module it runs), its output; fails with that output's tail."""
    done = subprocess.run(
        [sys.executable, "-m", "localcluster.demo", *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


def outcome(output: str) -> tuple[int, float, int]:
    """(version trained and promoted, its accuracy, held-out digits predicted right)."""
    trained = TRAINED.search(output)
    predicted = PREDICTED.search(output)
    assert trained, output[-4000:]
    assert predicted, output[-4000:]
    total, right = int(predicted.group(1)), int(predicted.group(2))
    assert right >= 0.8 * total, output[-4000:]  # a trained model answers, not a constant
    return int(trained.group(1)), float(trained.group(2)), right


@pytest.fixture
def clean_demo(real_node: dict[str, object]) -> Iterator[None]:
    """No demo before (a developer's is replaced), none left after."""
    run_demo("--clean")
    yield
    run_demo("--clean")


def test_demo_passes_twice_and_again_when_its_modelservice_is_recreated(
    kube_cluster: KubeCluster, clean_demo: None
) -> None:
    first, accuracy, _ = outcome(run_demo())
    assert first == 1
    assert accuracy >= 0.9  # the sample's quality gate
    # Again at once: the same ModelService, already Ready, nothing trained twice.
    again, _, _ = outcome(run_demo())
    assert again == first
    # Deleted and recreated: the store (a retained claim) still holds v1, so v2 is trained.
    kube_cluster.kubectl("delete", "modelservice", "digits", "-n", NAMESPACE, "--wait=true")
    recreated, accuracy, _ = outcome(run_demo())
    assert recreated == first + 1
    assert accuracy >= 0.9
