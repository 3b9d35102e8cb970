"""Fixtures of the deploy tests: real helm and kubectl binaries, the chart rendered per value set.

``make test`` installs helm and kubectl into the venv first (``make tools``). Run alone, the tests
install them the same way; they skip, naming the reason, only when that install fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .manifests import HelmError, Obj, find_tool, helm_template, install_tools

# Value sets every rendering test runs against: the defaults plus the combinations users run.
COMBOS: dict[str, dict[str, Any]] = {
    "default": {},
    "external": {
        "nats": {
            "enabled": False,
            "url": "tls://nats-0.nats.messaging.svc:4222,tls://nats-1.nats.messaging.svc:4222",
            "monitorUrl": "http://nats-0.nats.messaging.svc:8222,http://nats-1.nats.messaging.svc:8222",
            "auth": {"existingSecret": "nats-credentials", "type": "userPassword"},
            "tls": {"enabled": True, "secret": "nats-client-tls", "mutual": True},
        },
        "mongodb": {"enabled": False, "existingSecret": "mongodb-connection", "existingSecretKey": "uri"},
        "stream": {"replicas": 3},
        "ingest": {"auth": {"existingSecret": "ingest-tokens"}},
        "patientHashKey": {"existingSecret": "hash-key"},
    },
    "external-creds": {
        "nats": {
            "enabled": False,
            "url": "nats://nats:4222",
            "auth": {"existingSecret": "nats-creds", "type": "creds"},
        },
        "mongodb": {"enabled": False, "uri": "mongodb://db-0,db-1,db-2/medical_events?replicaSet=rs0"},
    },
    "cluster": {"nats": {"replicas": 3}, "stream": {"replicas": 3}},
    "autoscaling-off": {
        "ingest": {"autoscaling": {"enabled": False}, "replicas": 3},
        "operator": {"enabled": False},
    },
    "networkpolicy": {
        "networkPolicy": {
            "enabled": True,
            "ingestFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}
            ],
        },
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "medevents"}},
        "imagePullSecrets": [{"name": "regcred"}],
        "image": {"digest": "sha256:" + "ab" * 32},
        "extraEnv": [{"name": "PROCESSOR_MAX_ATTEMPTS", "value": "7"}],
        "commonLabels": {"team": "clinical-data"},
        "commonAnnotations": {"owner": "platform"},
    },
}


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of a working helm binary."""
    return _tool("helm")


@pytest.fixture(scope="session")
def kubectl() -> str:
    """Path of a working kubectl binary."""
    return _tool("kubectl")


def _tool(name: str) -> str:
    found = find_tool(name)
    if found is None:
        error = install_tools()
        found = find_tool(name)
        if found is None:
            pytest.skip(
                f"{name} is not installed and tools/install_k8s_tools.py could not install it: {error}"
            )
    return found


_rendered: dict[str, list[Obj]] = {}


@pytest.fixture(params=sorted(COMBOS))
def combo(request: pytest.FixtureRequest) -> str:
    """Name of one value set of COMBOS."""
    name: str = request.param
    return name


@pytest.fixture
def rendered(helm: str, combo: str, tmp_path: Path) -> list[Obj]:
    """The chart rendered with the value set ``combo`` (rendered once per session)."""
    if combo not in _rendered:
        try:
            _rendered[combo] = helm_template(helm, COMBOS[combo], tmp_path)
        except HelmError as exc:
            pytest.fail(f"helm template failed for value set {combo!r}: {exc}")
    return _rendered[combo]
