"""Helpers of the deploy tests: find helm/kubectl, render the chart, validate Kubernetes objects.

Objects of built-in kinds are checked against the Kubernetes OpenAPI schemas that PyPI package
``kubernetes-validate`` ships (strict: unknown fields fail); custom resources are checked against
the ``openAPIV3Schema`` of their CRD in the chart's ``crds/`` folder.
"""

from __future__ import annotations

import operator
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import all_versions
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "medevents"
CRDS = CHART / "crds"
K8S = ROOT / "k8s"
INSTALLER = ROOT / "tools" / "install_k8s_tools.py"

RELEASE = "medevents"
NAMESPACE = "medevents"

# The Kubernetes versions the chart supports (Chart.yaml kubeVersion >= 1.30), as far as the
# installed kubernetes-validate ships their schemas.
SUPPORTED = (Version("1.30"), Version("1.35"))

# Kinds no schema here describes: the Prometheus Operator's CRDs are not ours to ship.
UNCHECKED_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})

Obj = dict[str, Any]


def find_tool(name: str) -> str | None:
    """``name`` from the running virtualenv's bin (where ``make tools`` puts it), else from PATH."""
    in_venv = Path(sys.executable).parent / name
    if in_venv.is_file():
        return str(in_venv)
    return shutil.which(name)


def install_tools() -> str:
    """Run tools/install_k8s_tools.py for this interpreter's venv; return its error output, if any."""
    result = subprocess.run(
        [sys.executable, str(INSTALLER), sys.prefix], capture_output=True, text=True, timeout=600, check=False
    )
    return "" if result.returncode == 0 else (result.stderr or result.stdout).strip()[-2000:]


def load_yaml_docs(text: str) -> list[Obj]:
    """Every non-empty YAML document of ``text``."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def helm_template(helm: str, values: Mapping[str, Any] | None, tmp: Path, *extra: str) -> list[Obj]:
    """Render the chart (release ``medevents`` in namespace ``medevents``) with ``values``."""
    args = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra]
    if values:
        values_file = tmp / "values.yaml"
        values_file.write_text(yaml.safe_dump(dict(values)))
        args += ["--values", str(values_file)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise HelmError(result.stderr)
    return load_yaml_docs(result.stdout)


class HelmError(Exception):
    """helm refused to render; the message is its error output."""


def kube_versions() -> list[str]:
    """The supported Kubernetes minor versions that kubernetes-validate has schemas for."""
    low, high = SUPPORTED
    found = {f"{v.major}.{v.minor}" for v in map(Version, all_versions()) if low <= v <= high}
    return sorted(found, key=Version)


@cache
def crd_schemas() -> dict[tuple[str, str], Obj]:
    """``(apiVersion, kind) -> openAPIV3Schema`` of every CRD the chart ships."""
    schemas: dict[tuple[str, str], Obj] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in load_yaml_docs(path.read_text()):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def _strict(schema: Any) -> Any:
    """The schema with unknown fields forbidden where Kubernetes would drop them (structural
    schemas prune fields they do not name; kubectl's strict field validation reports them)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def custom_resource_errors(obj: Obj) -> list[str]:
    """Problems of a custom resource against its CRD's schema (OpenAPI v3 is a JSON Schema subset),
    unknown fields included."""
    schema = _strict(crd_schemas()[(obj["apiVersion"], obj["kind"])])
    # Every object has these, whether its CRD's schema names them or not.
    schema["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        **schema.get("properties", {}),
    }
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    return [
        f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(obj)
    ] + _cel_errors(obj)


# The CEL rules (x-kubernetes-validations) this module can evaluate: comparisons of two fields.
_RULE = re.compile(r"^self\.([\w.]+) (<=|<|>=|>|==) self\.([\w.]+)$")
_COMPARE = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}


def _cel_rules(schema: Obj, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Obj, Obj]]:
    """(path, schema at that path, rule) of every x-kubernetes-validations rule of a schema."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, schema, rule
    for name, child in schema.get("properties", {}).items():
        yield from _cel_rules(child, (*path, name))


def unsupported_cel_rules() -> list[str]:
    """CRD rules that :func:`custom_resource_errors` cannot evaluate (a test keeps this empty)."""
    return [
        rule["rule"]
        for schema in crd_schemas().values()
        for _, _, rule in _cel_rules(schema)
        if not _RULE.match(rule["rule"])
    ]


def _value(node: Any, schema: Obj, dotted: str) -> Any:
    """A field below ``node``, or its schema default when absent (the API server defaults first)."""
    for name in dotted.split("."):
        schema = schema.get("properties", {}).get(name, {})
        node = node.get(name, schema.get("default")) if isinstance(node, dict) else None
    return node


def _cel_errors(obj: Obj) -> list[str]:
    errors = []
    for path, schema, rule in _cel_rules(crd_schemas()[(obj["apiVersion"], obj["kind"])]):
        match = _RULE.match(rule["rule"])
        node: Any = obj
        for name in path:
            node = node.get(name, {}) if isinstance(node, dict) else {}
        if match is None:
            continue
        left, right = _value(node, schema, match.group(1)), _value(node, schema, match.group(3))
        comparable = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right))
        # Wrong types are the schema check's to report; CEL would not run on them either.
        if comparable and not _COMPARE[match.group(2)](left, right):
            message = rule.get("message", rule["rule"])
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(path)}: {message}")
    return errors


def validation_errors(obj: Obj, version: str) -> list[str]:
    """Problems of one object for one Kubernetes version; empty when it is valid."""
    if (obj.get("apiVersion"), obj.get("kind")) in crd_schemas():
        return custom_resource_errors(obj)
    if obj.get("kind") in UNCHECKED_KINDS:
        return []
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(map(str, exc.path))
        return [f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}): {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}"]
    return []


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec of a workload or a Pod, else None."""
    if obj["kind"] == "Pod":
        spec: Obj = obj["spec"]
        return spec
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        template: Obj = obj["spec"]["template"]["spec"]
        return template
    return None


def containers(spec: Obj) -> Iterator[Obj]:
    """Every container of a pod spec, init containers included."""
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def find(objs: list[Obj], kind: str, name_suffix: str = "") -> Obj:
    """The one object of ``kind`` whose name ends with ``name_suffix``."""
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (
        f"expected one {kind} *{name_suffix}, found {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def env_of(container: Obj) -> dict[str, Obj]:
    """A container's env entries by name."""
    return {entry["name"]: entry for entry in container.get("env", [])}
