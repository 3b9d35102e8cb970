"""A real Prometheus (Debian package ``prometheus``) scraping `medevents up` with the chart's alert
rules loaded: a little load and one dead letter, then the key series answer queries and
MedeventsDeadLetters fires while MedeventsIngestErrors stays quiet, as the rules say."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
import yaml

from medevents.local import free_port

from .localup import MEDEVENTS, LocalUp

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "medevents"
JSON = {"Content-Type": "application/json"}
HANDLER = """
from medevents.processor import PermanentError


async def handle(event, context):
    if event.type == "poison":
        raise PermanentError("poison")
    return {"status": "success", "message": "ok"}
"""


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(MEDEVENTS).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (prometheus: Debian package `prometheus`; helm: `make tools`)")
    return found


def rendered_rules(tmp: Path) -> Path:
    """The chart's PrometheusRule for release and namespace "medevents", as a Prometheus rule file."""
    out = subprocess.run(
        [tool("helm"), "template", "medevents", str(CHART), "-n", "medevents",
         "--set", "prometheusRule.enabled=true", "--show-only", "templates/prometheusrule.yaml"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    path = tmp / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": yaml.safe_load(out)["spec"]["groups"]}))
    return path


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[LocalUp, str]]:
    binary, rules = tool("prometheus"), rendered_rules(tmp_path)
    (tmp_path / "poison_handler.py").write_text(HANDLER)
    up = LocalUp(
        tmp_path / "data",
        env={
            "PROCESSOR_HANDLER": "poison_handler:handle",
            "PYTHONPATH": str(tmp_path),
            "MEDEVENTS_AUTOSCALE_ENABLED": "false",  # the scrape targets stay where they are
        },
    )
    server: subprocess.Popen[bytes] | None = None
    try:
        endpoints = up.start()
        targets = {"ingest": [endpoints["ingest"]], "processor": up.processors()}
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [
                        {"targets": [urlsplit(u).netloc for u in urls], "labels": {"namespace": "medevents"}}
                    ],
                }
                for job, urls in targets.items()
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        with (tmp_path / "prometheus.log").open("wb") as log:  # the child keeps its own descriptor
            server = subprocess.Popen(
                [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        yield up, url
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        up.stop()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(url + "/api/v1/query", params={"query": promql}, timeout=10)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def value(url: str, promql: str) -> float:
    result = query(url, promql)
    return float(result[0]["value"][1]) if result else 0.0


def alerts(url: str) -> dict[str, str]:
    """Alert name -> state (pending or firing)."""
    response = httpx.get(url + "/api/v1/alerts", timeout=10)
    return {a["labels"]["alertname"]: a["state"] for a in response.json()["data"]["alerts"]}


def eventually(check: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_prometheus_scrapes_medevents_up_and_the_dead_letter_alert_fires(
    prometheus: tuple[LocalUp, str],
) -> None:
    up, url = prometheus
    eventually(lambda: value(url, 'count(up{namespace="medevents"} == 1)') >= 2, "both jobs scraped")
    with httpx.Client(base_url=up.url, timeout=30) as client:
        for i in range(20):
            body = {
                "patientId": f"prom-{i % 4}",
                "type": "vitals",
                "data": {"i": i},
                "ts": "2025-10-01T10:30:00Z",
            }
            assert client.post("/events", content=msgspec.json.encode(body), headers=JSON).status_code == 202
        poison = {"patientId": "prom-9", "type": "poison", "data": {}, "ts": "2025-10-01T10:30:00Z"}
        assert client.post("/events", content=msgspec.json.encode(poison), headers=JSON).status_code == 202

    accepted = 'sum(medevents_ingest_requests_total{namespace="medevents",route="events",status="202"})'
    eventually(lambda: value(url, accepted) >= 21, "the 202s counted")
    eventually(
        lambda: value(url, 'sum(medevents_processor_applied_total{namespace="medevents"})') >= 20,
        "the events applied",
    )
    eventually(
        lambda: value(url, 'sum(medevents_processor_failed_total{namespace="medevents"})') == 1, "one failed"
    )
    buckets = 'medevents_processor_end_to_end_seconds_bucket{namespace="medevents"}'
    latency = f"histogram_quantile(0.5, sum by (le) (rate({buckets}[1m])))"
    eventually(lambda: bool(query(url, latency)), "an end-to-end latency")

    eventually(lambda: alerts(url).get("MedeventsDeadLetters") == "firing", "MedeventsDeadLetters firing")
    state = alerts(url)
    assert "MedeventsIngestErrors" not in state and "MedeventsPatientBlocked" not in state, state
    # No operator runs locally: its gauges are absent, which the rules say too (pending for 15 min).
    assert state.get("MedeventsPipelineMetricsAbsent") == "pending", state
