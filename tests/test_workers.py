"""BREAKER_WORKERS: a replica of N server processes sharing one port, each with its own app (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from breaker_service.serving import worker_count
from breaker_service.settings import Settings, SettingsError
from tests.fixtures.service import CLIENT_HEADERS, REPO_ROOT, deployed_env

if TYPE_CHECKING:
    from tests.fixtures.service import ServiceFactory, ServiceProcess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
STOP_TIMEOUT_S = 30.0
WORKER_CALL_TIMEOUT_S = 30.0
"""Long: a worker may still be starting when it is first asked (the connection waits in the queue meanwhile)."""


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def listening_inode(port: int) -> str:
    """The inode of the socket listening on 127.0.0.1:`port` (state 0A in /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":
            return fields[9]
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def socket_inodes(pid: int) -> set[str]:
    found: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def workers_of(service: ServiceProcess) -> set[int]:
    """The service's worker processes: its children that hold the listening socket."""
    assert service.pid is not None
    inode = listening_inode(service.port)
    return {child for child in children(service.pid) if inode in socket_inodes(child)}


def test_two_workers_share_the_port_and_stop_with_the_replica(service_factory: ServiceFactory, redis_url: str) -> None:
    service = service_factory(redis_url, env={"BREAKER_WORKERS": "2"})
    workers = workers_of(service)
    assert len(workers) == 2
    with httpx.Client(base_url=service.url, timeout=10.0) as client:
        for _ in range(10):
            response = client.post("/breakers/shared/acquire", json={}, headers=CLIENT_HEADERS)
            assert response.status_code == 200
        assert decisions_counted(client, "shared") == 10, "counted in the directory the replica made for its run"
    service.stop()
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def decisions_counted(client: httpx.Client, breaker: str) -> float:
    response = client.get("/metrics", headers=CLIENT_HEADERS)
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "breaker_decisions_total" and sample.labels.get("breaker") == breaker:
                return sample.value
    raise AssertionError(f"no breaker_decisions_total for {breaker!r}")


def test_a_scrape_reports_the_whole_replica_whichever_worker_answers(
    service_factory: ServiceFactory, redis_url: str, tmp_path: Path
) -> None:
    counters = tmp_path / "counters"
    counters.mkdir()
    env = {"BREAKER_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(counters)}
    service = service_factory(redis_url, env=env)
    first, second = sorted(workers_of(service))
    # Each worker in turn serves alone: the other, stopped, accepts no connection. A fresh connection per request.
    for serving, stopped, calls in ((first, second, 3), (second, first, 4)):
        os.kill(stopped, signal.SIGSTOP)
        try:
            for _ in range(calls):
                with httpx.Client(base_url=service.url, timeout=WORKER_CALL_TIMEOUT_S) as client:
                    response = client.post("/breakers/split/acquire", json={}, headers=CLIENT_HEADERS)
                    assert response.status_code == 200
        finally:
            os.kill(stopped, signal.SIGCONT)
        assert any(path.name.endswith(f"_{serving}.db") for path in counters.iterdir()), "it counted in its file"
    scrapes = []
    for _ in range(6):
        with httpx.Client(base_url=service.url, timeout=WORKER_CALL_TIMEOUT_S) as client:
            scrapes.append(decisions_counted(client, "split"))
    assert scrapes == [7.0] * 6


def test_a_worker_that_dies_stops_the_replica_with_status_1(service_factory: ServiceFactory, redis_url: str) -> None:
    service = service_factory(redis_url, env={"BREAKER_WORKERS": "2"})
    first, second = sorted(workers_of(service))
    os.kill(first, signal.SIGKILL)
    assert service.wait(STOP_TIMEOUT_S) == 1
    assert not Path(f"/proc/{second}").exists()


def test_one_worker_by_default_serves_in_the_process_itself(service_factory: ServiceFactory, redis_url: str) -> None:
    service = service_factory(redis_url)
    assert service.pid is not None
    assert listening_inode(service.port) in socket_inodes(service.pid)
    assert workers_of(service) == set()


def test_the_memory_store_refuses_more_than_one_worker() -> None:
    env = {**deployed_env(None), "BREAKER_WORKERS": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "breaker_service"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "BREAKER_WORKERS" in done.stderr
    assert "REDIS_URL" in done.stderr


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("3", 3)])
def test_a_number_of_workers_is_taken_as_given(value: str, expected: int) -> None:
    settings = Settings.from_env({"BREAKER_WORKERS": value, "REDIS_URL": "redis://127.0.0.1:6379"})
    assert worker_count(settings) == expected


def test_auto_is_every_core_this_process_may_use() -> None:
    settings = Settings.from_env({"BREAKER_WORKERS": "auto", "REDIS_URL": "redis://127.0.0.1:6379"})
    assert 1 <= worker_count(settings) <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_a_bad_worker_count_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="BREAKER_WORKERS"):
        Settings.from_env({"BREAKER_WORKERS": value, "REDIS_URL": "redis://127.0.0.1:6379"})
