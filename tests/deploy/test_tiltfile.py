"""The Tiltfile: it parses (Starlark is a Python subset), names only files that exist, syncs code
to where the image installs it, and forwards the ports the README promises."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from .manifests import CHART, ROOT, helm_template, kube_versions, validation_errors

TILTFILE = ROOT / "Tiltfile"


def _tree() -> ast.Module:
    return ast.parse(TILTFILE.read_text(), filename="Tiltfile")


def _calls(name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(_tree())
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
    ]


def _constants() -> dict[str, str]:
    """Module-level NAME = "string" and NAME = "a" + "b" assignments."""
    found: dict[str, str] = {}
    for node in _tree().body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = _string(node.value, found)
            if value is not None:
                found[node.targets[0].id] = value
    return found


def _string(node: ast.expr, names: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _string(node.left, names), _string(node.right, names)
        return None if left is None or right is None else left + right
    return None


def _strings(node: ast.expr | None) -> list[str]:
    if node is None:
        return []
    if isinstance(node, ast.List | ast.Tuple):
        return [s for item in node.elts for s in _strings(item)]
    value = _string(node, _constants())
    return [] if value is None else [value]


def _arg(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return call.args[position] if len(call.args) > position else None


def _local_paths() -> list[str]:
    """Every file or folder of this repository the Tiltfile refers to."""
    paths = []
    for call in _calls("docker_build_with_restart") + _calls("docker_build"):
        paths += _strings(_arg(call, 1, "context"))
        paths += _strings(_arg(call, 99, "dockerfile"))
        paths += _strings(_arg(call, 99, "only"))
    for call in _calls("sync"):
        paths += _strings(_arg(call, 0, "local_path"))
    for call in _calls("fall_back_on"):
        paths += _strings(_arg(call, 0, "files"))
    for call in _calls("helm"):
        paths += _strings(_arg(call, 0, "paths"))
        paths += _strings(_arg(call, 99, "values"))
    for call in _calls("k8s_yaml"):
        paths += _strings(_arg(call, 0, "yaml"))
    return paths


def test_tiltfile_parses() -> None:
    assert _tree().body


def test_names_only_files_that_exist() -> None:
    paths = _local_paths()
    assert (
        "Dockerfile" in paths and "charts/medevents" in paths and "charts/medevents/values-dev.yaml" in paths
    )
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"the Tiltfile names files that do not exist: {missing}"


def test_live_update_targets_the_installed_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    venv = re.search(r"python -m venv (\S+)", dockerfile)
    python = re.search(r"ARG PYTHON_IMAGE=python:(\d+\.\d+)\.", dockerfile)
    assert venv and python
    site = f"{venv.group(1)}/lib/python{python.group(1)}/site-packages/medevents"
    targets = {}
    for call in _calls("sync"):
        local, remote = _strings(call.args[0])[0], _strings(call.args[1])[0]
        targets[local] = remote
    assert targets == {
        "medevents": site,
        "ingest": f"{site}/ingest",
        "processor": f"{site}/processor",
        "operator": f"{site}/operator",
    }
    build = _calls("docker_build_with_restart")[0]
    assert _strings(_arg(build, 99, "target")) == ["dev"]
    assert re.search(r"^FROM \S+ AS dev$", dockerfile, re.MULTILINE)
    restart_file = _strings(_arg(build, 99, "restart_file"))[0]
    assert restart_file.startswith(venv.group(1) + "/"), "the app user must be able to write the restart file"


def test_port_forwards_and_groups() -> None:
    forwards: dict[str, list[str]] = {}
    labelled = []
    for call in _calls("k8s_resource"):
        name = _strings(_arg(call, 0, "workload")) or _strings(_arg(call, 99, "new_name"))
        forwards[name[0]] = _strings(_arg(call, 99, "port_forwards"))
        labelled.append(bool(_strings(_arg(call, 99, "labels"))))
    assert "3000:3000" in forwards["medevents-ingest"]
    assert "3001:3001" in forwards["medevents-processor"]
    assert "4222:4222" in forwards["medevents-nats"]
    assert all(labelled), "every resource belongs to a group (labels)"


def test_dev_values_keep_the_dev_loop_local() -> None:
    values = yaml.safe_load((CHART / "values-dev.yaml").read_text())
    assert values["nats"]["enabled"] and values["mongodb"]["enabled"]
    build = _calls("docker_build_with_restart")[0]
    assert _strings(build.args[0]) == [values["image"]["repository"]], "Tilt must recognise the chart's image"


def test_dev_values_render_and_validate(helm: str, tmp_path: Path) -> None:
    values = yaml.safe_load((CHART / "values-dev.yaml").read_text())
    objs = helm_template(helm, values, tmp_path)
    errors = [e for version in kube_versions() for obj in objs for e in validation_errors(obj, version)]
    assert not errors, "\n".join(errors)
