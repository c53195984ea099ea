"""deploy/ against real Prometheus tools: promtool checks and unit-tests the alert rules, every metric the rules and
the Grafana dashboard name is one the service exposes, and a real Prometheus scrapes two replicas.

Needs Debian's `prometheus` package (server and promtool); without it these tests fail and say how to get it.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests._waiting import wait_until
from tests.fixtures.app import ADMIN, CLIENT
from tests.fixtures.process import HOST, ManagedProcess, ProcessError
from tests.fixtures.service import ADMIN_HEADERS, CLIENT_HEADERS, CLIENT_TOKEN, REPO_ROOT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    import redis.asyncio

    from tests.fixtures.service import ServiceFactory, ServiceProcess

pytestmark = pytest.mark.prometheus

DEPLOY: Final = REPO_ROOT / "deploy"
RULES: Final = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS: Final = DEPLOY / "prometheus" / "alerts_test.yml"
GRAFANA: Final = DEPLOY / "grafana" / "breaker-service.json"
HOW_TO_GET: Final = "install Debian's prometheus package (`apt-get install prometheus`: the server and promtool)"
PROMETHEUS_WAIT_S: Final = 60.0
_METRIC_NAME: Final = re.compile(r"\b((?:breaker|process|python)_[a-z_]+)\b(?!\s*\()")
_SUFFIXES: Final = ("_total", "_bucket", "_sum", "_count", "_created")


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {HOW_TO_GET}")
    return found


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_each_alert_fires_on_its_incident_and_stays_silent_otherwise() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_cover_every_alert() -> None:
    alerts = set(re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.MULTILINE))
    tested = set(re.findall(r"alertname: (\w+)$", RULE_TESTS.read_text(), re.MULTILINE))
    assert (
        alerts
        == tested
        == {
            "BreakerOpenTooLong",
            "BreakerFlapping",
            "BreakerStoreUnreachable",
            "BreakerDegradationNotNormal",
        }
    )


def dashboard_expressions() -> list[str]:
    document = json.loads(GRAFANA.read_text())
    assert document["uid"] == "breaker-service"
    return [target["expr"] for panel in document["panels"] for target in panel["targets"]]


def exposed_names(text: str) -> set[str]:
    families = {family.name for family in text_string_to_metric_families(text)}
    return families | {family + suffix for family in families for suffix in _SUFFIXES}


async def test_rules_and_dashboard_name_only_metrics_the_service_exposes(client: httpx.AsyncClient) -> None:
    await client.put("/breakers/rated", json={"window_s": 60, "min_calls": 10, "failure_rate": 0.5}, headers=ADMIN)
    await client.post("/breakers/rated/record", json={"outcome": "success", "duration_ms": 5}, headers=CLIENT)
    exposed = exposed_names((await client.get("/metrics", headers=CLIENT)).text)
    expressions = [*dashboard_expressions(), *re.findall(r"expr: (.+)$", RULES.read_text(), re.MULTILINE)]
    named = {name for expression in expressions for name in _METRIC_NAME.findall(expression)}
    assert len(expressions) >= 15
    assert named - exposed == set()
    assert {"breaker_state", "breaker_transitions_total", "breaker_store_up", "breaker_degradation_mode"} <= named


class PrometheusServer(ManagedProcess):
    """A Prometheus server on 127.0.0.1 with its own config and empty storage."""

    what = "prometheus"
    error = ProcessError
    start_timeout_s = PROMETHEUS_WAIT_S
    poll_interval_s = 0.1

    def __init__(self, directory: Path, targets: list[str]) -> None:
        super().__init__(directory)
        self._targets = targets

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def output_path(self) -> Path:
        return self._directory / "prometheus.log"

    def _spawn(self) -> subprocess.Popen[bytes]:
        config = self._directory / "prometheus.yml"
        (self._directory / "token").write_text(CLIENT_TOKEN)
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "breaker-service",
                            "authorization": {"type": "Bearer", "credentials_file": str(self._directory / "token")},
                            "static_configs": [{"targets": self._targets}],
                        }
                    ],
                }
            )
        )
        command = [
            binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={self._directory / 'data'}",
            f"--web.listen-address={HOST}:{self.port}",
        ]
        with self.output_path.open("wb") as output:
            return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)

    @contextlib.contextmanager
    def _readiness(self) -> Iterator[Callable[[], bool]]:
        with httpx.Client(base_url=self.url, timeout=1.0) as client:

            def ready() -> bool:
                try:
                    return client.get("/-/ready").status_code == 200
                except httpx.TransportError:
                    return False

            yield ready


@pytest.fixture
def replicas(
    service_factory: ServiceFactory, redis_url: str, redis_client: redis.asyncio.Redis
) -> list[ServiceProcess]:
    return [service_factory(redis_url), service_factory(redis_url)]


@pytest.fixture
def prometheus(tmp_path: Path, replicas: list[ServiceProcess]) -> Iterator[PrometheusServer]:
    binary("prometheus")
    with PrometheusServer(tmp_path / "prometheus", [s.url.removeprefix("http://") for s in replicas]) as server:
        yield server


@pytest.fixture
async def api(prometheus: PrometheusServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=prometheus.url, timeout=10.0) as client:
        yield client


async def query(api: httpx.AsyncClient, expression: str) -> list[dict[str, Any]]:
    response = await api.get("/api/v1/query", params={"query": expression})
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


async def scalar(api: httpx.AsyncClient, expression: str) -> float | None:
    result = await query(api, expression)
    return float(result[0]["value"][1]) if result else None


async def test_a_real_prometheus_scrapes_both_replicas(replicas: list[ServiceProcess], api: httpx.AsyncClient) -> None:
    first, second = replicas
    async with (
        httpx.AsyncClient(base_url=first.url, headers=CLIENT_HEADERS) as one,
        httpx.AsyncClient(base_url=second.url, headers=CLIENT_HEADERS) as two,
    ):
        forced = await one.post(
            "/breakers/payments/force-open?create=true", json={"reason": "drill"}, headers=ADMIN_HEADERS
        )
        assert forced.status_code == 200, forced.text
        for client, count in ((one, 3), (two, 2)):
            answer = await client.post("/breakers/search/record", json={"outcome": "success", "count": count})
            assert answer.status_code == 200, answer.text

    async def both_scraped() -> bool:
        return await scalar(api, 'count(up{job="breaker-service"} == 1)') == 2 and (
            await scalar(api, 'count(breaker_state{breaker="payments",state="OPEN"} == 1)') == 2
        )

    await wait_until(both_scraped, "Prometheus to scrape both replicas", timeout_s=PROMETHEUS_WAIT_S)
    assert await scalar(api, 'max by (breaker) (breaker_state{breaker="payments",state="OPEN"})') == 1
    assert await scalar(api, 'sum(breaker_calls_total{breaker="search",kind="success"})') == 5
    by_instance = await query(api, 'breaker_calls_total{breaker="search",kind="success"}')
    assert sorted(float(sample["value"][1]) for sample in by_instance) == [2.0, 3.0]

    async def open_alert_pending() -> bool:
        response = await api.get("/api/v1/alerts")
        alerts = response.json()["data"]["alerts"]
        return any(
            a["labels"]["alertname"] == "BreakerOpenTooLong" and a["labels"]["breaker"] == "payments" for a in alerts
        )

    await wait_until(open_alert_pending, "BreakerOpenTooLong to be pending for payments", timeout_s=PROMETHEUS_WAIT_S)
    rules = (await api.get("/api/v1/rules")).json()["data"]["groups"][0]["rules"]
    assert {rule["name"] for rule in rules} == {
        "BreakerOpenTooLong",
        "BreakerFlapping",
        "BreakerStoreUnreachable",
        "BreakerDegradationNotNormal",
    }
    assert {rule["health"] for rule in rules} == {"ok"}

    # Every Grafana panel's query is valid PromQL that Prometheus runs (the breaker variable set to "All").
    for expression in dashboard_expressions():
        response = await api.get("/api/v1/query", params={"query": expression.replace("$breaker", ".*")})
        assert response.status_code == 200, f"{expression}: {response.text}"
    opened = await query(
        api, 'max by (breaker) (breaker_state{state="HALF_OPEN"}) + 2 * max by (breaker) (breaker_state{state="OPEN"})'
    )
    assert {sample["metric"]["breaker"]: float(sample["value"][1]) for sample in opened}["payments"] == 2
