"""Multi-worker placement: TF_CONFIG kept where names resolve, peers met by IP where not."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from modelservice_serving import contract, workers

pytestmark = pytest.mark.unit


def _config(hosts: list[str], index: int) -> str:
    return json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})


def test_without_tf_config_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert workers.reachable_tf_config() is None


def test_names_that_resolve_are_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _config(["localhost:2222", "localhost:2223"], 1)
    monkeypatch.setenv("TF_CONFIG", config)
    monkeypatch.setenv(contract.ENV_WORKER_RENDEZVOUS, str(tmp_path / "meet"))
    monkeypatch.setenv(contract.ENV_POD_IP, "10.0.0.5")
    assert workers.reachable_tf_config(resolve_wait_s=0) == json.loads(config)
    assert not (tmp_path / "meet").exists()


def test_workers_meet_through_the_store_where_names_do_not_resolve(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    meet = tmp_path / "store" / ".workers" / "job-v1"
    hosts = [f"job-{i}.job.invalid:2222" for i in range(3)]
    # Workers 0 and 2 announce themselves (other pods); this process is worker 1.
    peers = [
        threading.Thread(
            target=workers._rendezvous, args=(meet, i, f"10.0.0.{i + 10}:2222", 3, 30.0)
        )
        for i in (0, 2)
    ]
    for peer in peers:
        peer.start()
    monkeypatch.setenv("TF_CONFIG", _config(hosts, 1))
    monkeypatch.setenv(contract.ENV_WORKER_RENDEZVOUS, str(meet))
    monkeypatch.setenv(contract.ENV_POD_IP, "10.0.0.11")
    config = workers.reachable_tf_config(resolve_wait_s=0, rendezvous_wait_s=30)
    for peer in peers:
        peer.join(30)
    assert config is not None
    assert config["cluster"]["worker"] == ["10.0.0.10:2222", "10.0.0.11:2222", "10.0.0.12:2222"]
    assert config["task"] == {"type": "worker", "index": 1}
    assert json.loads(workers.os.environ["TF_CONFIG"]) == config


def test_a_missing_worker_is_named(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError, match="workers 1 did not report"):
        workers._rendezvous(tmp_path / "meet", 0, "10.0.0.1:2222", 2, 0.0)


def test_the_rendezvous_is_cleared_and_the_store_keeps_its_other_jobs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    meet = tmp_path / "store" / ".workers" / "job-v1"
    other = tmp_path / "store" / ".workers" / "job-v2"
    for directory in (meet, other):
        directory.mkdir(parents=True)
        (directory / "0").write_text("10.0.0.10:2222")
    monkeypatch.setenv(contract.ENV_WORKER_RENDEZVOUS, str(meet))
    workers.clear_rendezvous()
    assert not meet.exists()
    assert (other / "0").exists()  # another Job's, still meeting
    monkeypatch.setenv(contract.ENV_WORKER_RENDEZVOUS, str(other))
    workers.clear_rendezvous()
    assert not (tmp_path / "store" / ".workers").exists()  # the last one takes the parent
    workers.clear_rendezvous()  # already gone: nothing to do, no error
    monkeypatch.delenv(contract.ENV_WORKER_RENDEZVOUS)
    workers.clear_rendezvous()
