"""The chart's alert rules and Grafana dashboard: rendered, checked by promtool (Debian package
``prometheus``), unit-tested (tests/deploy/prometheus/alerts-test.yaml: every alert fires on bad
input and stays quiet on healthy input), each alert linked to its runbook section in
docs/OPERATIONS.md, and every dashboard query parsed by promtool. That every metric they name is
one the components expose is checked against real processes in tests/e2e/test_observability.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .manifests import ROOT, Obj, helm_template

TESTS = Path(__file__).parent / "prometheus"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"
ON = {
    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
    "grafanaDashboard": {"enabled": True},
}
# Grafana's variables, replaced by values for promtool (it parses PromQL, not dashboards).
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "${__rate_interval}": "5m",
    "$namespace": "medevents",
    "$pipeline": ".*",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; .ci/run installs it)")
    return found


def run_promtool(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def only(objs: list[Obj], kind: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, [o["kind"] for o in objs]
    return found[0]


@pytest.fixture(scope="module")
def chart(helm: str, tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    return helm_template(helm, ON, tmp_path_factory.mktemp("observability"))


def rules(chart: list[Obj]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = only(chart, "PrometheusRule")["spec"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_nothing_is_rendered_unless_asked(helm: str, tmp_path: Path) -> None:
    kinds = {o["kind"] for o in helm_template(helm, {}, tmp_path)}
    assert "PrometheusRule" not in kinds
    assert not [
        o for o in helm_template(helm, {}, tmp_path) if "grafana_dashboard" in o["metadata"]["labels"]
    ]


def test_the_alert_rules_pass_promtool_and_their_unit_tests(chart: list[Obj], tmp_path: Path) -> None:
    rule = only(chart, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    groups = rule["spec"]["groups"]
    (tmp_path / "rendered.yaml").write_text(yaml.safe_dump({"groups": groups}))
    out = run_promtool("check", "rules", "rendered.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(rules(chart))} rules found" in out
    # The unit tests compare labels exactly; annotations are checked by the next test instead.
    bare = [
        {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
        for g in groups
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": bare}))
    shutil.copy(TESTS / "alerts-test.yaml", tmp_path)
    run_promtool("test", "rules", "alerts-test.yaml", cwd=tmp_path)
    tested = set(re.findall(r"alertname: (\w+)", (TESTS / "alerts-test.yaml").read_text()))
    assert tested == {r["alert"] for r in rules(chart)}, "every alert needs a promtool unit test"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    return {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in markdown.splitlines()
        if line.startswith("#")
    }


def test_every_alert_says_what_happened_and_links_to_its_runbook(chart: list[Obj]) -> None:
    anchors = _anchors(OPERATIONS.read_text())
    for rule in rules(chart):
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        url = annotations["runbook_url"]
        assert url.startswith("https://github.com/medevents/medevents/blob/main/docs/OPERATIONS.md#"), url
        anchor = url.rsplit("#", 1)[1]
        assert anchor == rule["alert"].lower() and anchor in anchors, f"no section for {rule['alert']}"


def dashboard(chart: list[Obj]) -> dict[str, Any]:
    config_maps = [
        o for o in chart if o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"]["labels"]
    ]
    assert len(config_maps) == 1
    assert config_maps[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    loaded: dict[str, Any] = json.loads(config_maps[0]["data"]["medevents.json"])
    return loaded


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and the variables' label_values."""
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), \w+\)", variable["definition"])
            assert match, variable["definition"]
            exprs.append(match.group(1))
    return exprs


def test_every_dashboard_query_parses(chart: list[Obj], tmp_path: Path) -> None:
    board = dashboard(chart)
    assert board["uid"] == "medevents-overview"
    titles = {p["title"] for p in board["panels"]}
    for wanted in (
        "Arrival and processing rates",
        "Lag",
        "Estimated drain time",
        "Processors and desired replicas",
        "End-to-end latency",
        "Fence waits",
        "Retries",
        "Dead letters",
        "Ingest status codes",
    ):
        assert wanted in titles
    exprs = dashboard_queries(board)
    recorded = []
    for i, expr in enumerate(exprs):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"a Grafana variable promtool would not understand: {expr}"
        recorded.append({"record": f"medevents:dashboard_query_{i}", "expr": expr})
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]})
    )
    out = run_promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(recorded)} rules found" in out
    # Every panel's datasource is the variable, so it works with any Prometheus data source name.
    assert all(p["datasource"]["uid"] == "${datasource}" for p in board["panels"] if "datasource" in p)
