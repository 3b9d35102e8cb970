"""The alert rules and the dashboard name only metrics the components really expose: `medevents
up` runs ingest and processors, their /metrics are scraped, and every ``medevents_*`` name in
the chart's PrometheusRule template and dashboard JSON must be among them (or among the
operator's, read from its metrics registry; tests/operator scrapes the operator process itself)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from medevents.operator._metrics import PipelineMetrics

from .localup import LocalUp

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "medevents" / "templates" / "prometheusrule.yaml"
DASHBOARD = ROOT / "charts" / "medevents" / "dashboards" / "medevents.json"
# Series the rules read from kube-state-metrics, not from medevents.
KUBE_STATE_METRICS = {
    "kube_deployment_status_replicas_unavailable",
    "kube_statefulset_status_replicas",
    "kube_statefulset_status_replicas_ready",
}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def sample_names(families: object) -> set[str]:
    """The series names a scrape offers for these metric families (a labelled counter nobody
    incremented yet still announces its family, so its series names count)."""
    names = set()
    for family in families:  # type: ignore[attr-defined]
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


def scraped(url: str) -> set[str]:
    response = httpx.get(url + "/metrics", timeout=10)
    assert response.status_code == 200
    return sample_names(text_string_to_metric_families(response.text))


def registry_names(registry: CollectorRegistry) -> set[str]:
    return sample_names(registry.collect())


def referenced(path: Path, prefix: str = "medevents_") -> set[str]:
    return set(re.findall(rf"\b({prefix}[a-z0-9_]+)", path.read_text()))


def test_rules_and_dashboard_name_only_metrics_that_exist(tmp_path: Path) -> None:
    up = LocalUp(tmp_path / "data", env={"MEDEVENTS_AUTOSCALE_ENABLED": "false"})
    try:
        exposed = scraped(up.start()["ingest"])
        exposed |= scraped(up.processors()[0])
    finally:
        up.stop()
    exposed |= registry_names(PipelineMetrics().registry)
    assert {"medevents_ingest_requests_total", "medevents_processor_end_to_end_seconds_bucket"} <= exposed

    in_rules, in_dashboard = referenced(RULES), referenced(DASHBOARD)
    assert {"medevents_pipeline_lag", "medevents_nats_sync_always"} <= in_rules
    assert len(in_dashboard) > 20, in_dashboard
    assert not in_rules - exposed, f"alert rules name metrics nobody exposes: {sorted(in_rules - exposed)}"
    assert not in_dashboard - exposed, (
        f"the dashboard names metrics nobody exposes: {sorted(in_dashboard - exposed)}"
    )
    assert referenced(RULES, "kube_") == KUBE_STATE_METRICS
    assert not referenced(DASHBOARD, "kube_")
