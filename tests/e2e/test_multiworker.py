"""Scale-out: the ``train`` entrypoint under TF_CONFIG with two local worker processes.

Two processes form a MultiWorkerMirroredStrategy cluster on loopback, as two training pods
would; worker 0 (no chief named) publishes the version and reports. Slow (two TensorFlow
processes), so it runs with the end-to-end tier.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all held open while choosing, so none comes twice."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def train_workers(data: Path, tmp_path: Path, envs: list[dict[str, str]]) -> list[str]:
    """Run one ``train`` worker per environment to the end; their outputs.

    A worker still running after 300 s is killed with the others (none outlives the test),
    and the failure shows every worker's last output.
    """
    workers = [
        subprocess.Popen(
            [
                sys.executable, "-m", "modelservice_serving", "train", "--dataset", str(data),
                "--epochs", "1", "--hidden-units", "4", "--batch-size", "16", "--seed", "1",
                "--output", str(tmp_path / "store" / "v1"),
                "--termination-log", str(tmp_path / f"termination-{i}"),
            ],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1", **env},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i, env in enumerate(envs)
    ]  # fmt: skip
    try:
        outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    except subprocess.TimeoutExpired:
        for worker in workers:
            worker.kill()
        tails = [worker.communicate()[0][-1500:] for worker in workers]
        raise AssertionError(f"workers still running after 300 s; their output: {tails}") from None
    codes = [worker.returncode for worker in workers]
    assert codes == [0] * len(workers), [output[-2000:] for output in outputs]
    return outputs


def points_csv(tmp_path: Path, seed: int) -> Path:
    """64 labelled points of two separable kinds, as a CSV dataset."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(2, size=64)
    rows = [f"{k * 2 + rng.normal():.3f},{rng.normal():.3f},{k}" for k in kinds]
    data = tmp_path / "points.csv"
    data.write_text("x,y,label\n" + "\n".join(rows) + "\n")
    return data


def test_two_workers_train_one_version(tmp_path: Path) -> None:
    """TF_CONFIG with two workers: MultiWorkerMirroredStrategy, worker 0 publishes."""
    data = points_csv(tmp_path, seed=0)
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    outputs = train_workers(
        data,
        tmp_path,
        [
            {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
            for i in range(2)
        ],
    )
    chief = json.loads((tmp_path / "termination-0").read_text())
    assert chief["status"] == "Succeeded"
    assert not (tmp_path / "termination-1").exists()  # only the chief reports
    assert sorted(path.name for path in (tmp_path / "store").iterdir()) == ["v1"]
    metadata = json.loads((tmp_path / "store" / "v1" / "metadata.json").read_text())
    assert metadata["workers"] == 2
    assert '"event": "epoch"' in outputs[0]
    assert '"event": "epoch"' not in outputs[1]


def test_workers_without_dns_meet_through_the_store(tmp_path: Path) -> None:
    """Names that do not resolve (no cluster DNS): the workers swap IPs through the store."""
    data = points_csv(tmp_path, seed=1)
    ports = free_ports(2)
    # As the operator writes them: <job>-<i>.<service>, here under a TLD that never resolves.
    cluster = {"worker": [f"job-{i}.job.invalid:{port}" for i, port in enumerate(ports)]}
    meet = tmp_path / "store" / ".workers" / "job-v1"
    outputs = train_workers(
        data,
        tmp_path,
        [
            {
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}
                ),
                "MSO_WORKER_RENDEZVOUS": str(meet),
                "MSO_POD_IP": "127.0.0.1",
            }
            for i in range(2)
        ],
    )
    assert json.loads((tmp_path / "termination-0").read_text())["status"] == "Succeeded"
    met = ",".join(f"127.0.0.1:{port}" for port in ports)
    for output in outputs:  # each worker read both addresses from the store
        assert f"workers met through {meet}: {met}" in output, output[-2000:]
    # The chief cleared the rendezvous once the model was saved: the store holds versions.
    assert sorted(path.name for path in (tmp_path / "store").iterdir()) == ["v1"]
    metadata = json.loads((tmp_path / "store" / "v1" / "metadata.json").read_text())
    assert metadata["workers"] == 2
