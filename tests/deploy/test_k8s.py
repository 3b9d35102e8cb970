"""k8s/: the kustomize base is the chart's defaults, the overlays render and validate, the CRDs are
the chart's, and the example EventPipelines are valid custom resources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .manifests import (
    CRDS,
    K8S,
    ROOT,
    Obj,
    custom_resource_errors,
    env_of,
    find,
    kube_versions,
    load_yaml_docs,
    pod_spec,
    validation_errors,
)

OVERLAYS = ["base", "overlays/dev", "overlays/prod"]


def _kustomize(kubectl: str, directory: str) -> list[Obj]:
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed: {result.stderr}"
    return load_yaml_docs(result.stdout)


def test_crds_are_copies_of_the_charts() -> None:
    chart_crds = sorted(p.name for p in CRDS.glob("*.yaml"))
    assert chart_crds == sorted(
        p.name for p in (K8S / "crds").glob("*.yaml") if p.name != "kustomization.yaml"
    )
    for name in chart_crds:
        assert (K8S / "crds" / name).read_bytes() == (CRDS / name).read_bytes(), f"k8s/crds/{name} differs"


def test_base_is_the_charts_defaults(helm: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "render_k8s_base.py"), "--check", "--helm", helm],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("directory", OVERLAYS)
def test_kustomization_renders_and_validates(kubectl: str, directory: str) -> None:
    objs = _kustomize(kubectl, directory)
    errors = [e for version in kube_versions() for obj in objs for e in validation_errors(obj, version)]
    assert not errors, "\n".join(errors)
    kinds = {o["kind"] for o in objs}
    assert {"CustomResourceDefinition", "Deployment", "Role", "EventPipeline", "KopfPeering"} <= kinds
    # Every Secret a pod reads is there (or, in prod, documented as created outside git).
    secrets = {o["metadata"]["name"] for o in objs if o["kind"] == "Secret"}
    wanted = {
        ref["secretKeyRef"]["name"]
        for o in objs
        if (spec := pod_spec(o)) is not None
        for c in spec["containers"]
        for e in c.get("env", [])
        if (ref := e.get("valueFrom", {})) and "secretKeyRef" in ref
    }
    if directory == "overlays/prod":
        assert not secrets
        assert wanted == {"medevents-mongodb", "medevents-hash-key"}
        assert "medevents-mongodb" in (K8S / directory / "kustomization.yaml").read_text()
    else:
        assert wanted <= secrets


def test_dev_overlay_is_small_and_fast(kubectl: str) -> None:
    objs = _kustomize(kubectl, "overlays/dev")
    assert not [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]
    ingest = find(objs, "Deployment", "-ingest")
    assert ingest["spec"]["replicas"] == 1
    processor = pod_spec(find(objs, "Deployment", "-processor"))
    assert processor is not None
    env = env_of(processor["containers"][0])
    assert env["LOG_LEVEL"]["value"] == "DEBUG"
    assert (
        int(env["PROCESSOR_DELAY_MAX_MS"]["value"])
        == find(objs, "EventPipeline")["spec"]["processing"]["delayMaxMs"]
    )


def test_prod_overlay_uses_existing_servers(kubectl: str) -> None:
    objs = _kustomize(kubectl, "overlays/prod")
    assert not [o for o in objs if o["kind"] in ("StatefulSet", "ConfigMap")]
    pipeline = find(objs, "EventPipeline")
    for component in ("ingest", "processor", "operator"):
        spec = pod_spec(find(objs, "Deployment", f"-{component}"))
        assert spec is not None
        env = env_of(spec["containers"][0])
        assert env["NATS_URL"]["value"] == pipeline["spec"]["nats"]["url"] == "nats://nats.nats.svc:4222"
        assert env["MEDEVENTS_STREAM_REPLICAS"]["value"] == str(pipeline["spec"]["stream"]["replicas"]) == "3"


def test_example_event_pipelines_are_valid() -> None:
    examples = sorted((K8S / "examples").glob("*.yaml"))
    assert examples, "k8s/examples/ has no EventPipeline"
    for path in examples:
        for obj in load_yaml_docs(path.read_text()):
            assert obj["kind"] == "EventPipeline", path.name
            assert custom_resource_errors(obj) == [], path.name


def test_example_check_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    obj = load_yaml_docs(sorted((K8S / "examples").glob("*.yaml"))[0].read_text())[0]
    del obj["spec"]["processor"]
    obj["spec"]["unknownField"] = 1
    errors = custom_resource_errors(obj)
    assert any("'processor' is a required property" in e for e in errors), errors
    assert any("unknownField" in e for e in errors), errors
