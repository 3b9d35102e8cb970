"""The dependency locks (requirements/*.lock, `make lock`): complete, hashed, consistent with
pyproject.toml and with each other, installed by the Makefile and the Dockerfile, and what the tests
run with."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def pins(name: str) -> dict[str, list[tuple[str, str | None, int]]]:
    """Package -> [(version, marker, number of hashes)] of one lock file."""
    found: dict[str, list[tuple[str, str | None, int]]] = {}
    current: list[tuple[str, str | None, int]] | None = None
    for line in (LOCKS / name).read_text().splitlines():
        if match := _PIN.match(line):
            entry = (match.group(2), match.group(3), 0)
            current = found.setdefault(canonicalize_name(match.group(1)), [])
            current.append(entry)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, marker, hashes = current[-1]
            current[-1] = (version, marker, hashes + 1)
    return found


def applies(marker: str | None) -> bool:
    return marker is None or Marker(marker).evaluate()


LOCK_OF = {"image.lock": ["otel"], "local.lock": ["local", "otel"], "dev.lock": ["local", "dev", "otel"]}


@pytest.mark.parametrize("lock", [*LOCK_OF, "tools.lock"])
def test_every_pin_has_hashes(lock: str) -> None:
    found = pins(lock)
    assert found, lock
    for package, entries in found.items():
        assert all(hashes > 0 for _, _, hashes in entries), (lock, package)


@pytest.mark.parametrize(("lock", "extras"), LOCK_OF.items())
def test_pyproject_dependencies_are_locked_within_their_ranges(lock: str, extras: list[str]) -> None:
    found = pins(lock)
    wanted = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        wanted += PYPROJECT["project"]["optional-dependencies"][extra]
    for text in wanted:
        requirement = Requirement(text)
        entries = found.get(canonicalize_name(requirement.name))
        assert entries, f"{requirement.name} is in pyproject.toml but not in {lock}: run `make lock`"
        for version, _, _ in entries:
            assert Version(version) in requirement.specifier, (lock, text, version)


@pytest.mark.parametrize("lock", ["image.lock", "local.lock"])
def test_the_smaller_locks_pick_the_versions_of_the_dev_lock(lock: str) -> None:
    dev = pins("dev.lock")
    for package, entries in pins(lock).items():
        assert {v for v, _, _ in entries} <= {v for v, _, _ in dev[package]}, (lock, package)


def test_the_image_lock_has_no_embedded_servers() -> None:
    local = {
        canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["local"]
    }
    assert not local & set(pins("image.lock"))


def test_the_makefile_and_the_dockerfile_install_from_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for lock in ("dev.lock", "local.lock", "tools.lock"):
        assert re.search(rf"install --require-hashes -r \$\(LOCKS\)/{re.escape(lock)}", makefile), lock
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements/image.lock" in dockerfile
    assert "pip install --no-deps ." in dockerfile, "the project itself must not resolve anything"


def test_the_tests_run_with_the_locked_versions() -> None:
    """This environment is the dev lock: what passed here is what the lock pins."""
    drift = []
    for package, entries in pins("dev.lock").items():
        for version, marker, _ in entries:
            if not applies(marker):
                continue
            try:
                installed = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                drift.append(f"{package}: not installed, lock {version}")
                continue
            if Version(installed) != Version(version):
                drift.append(f"{package}: installed {installed}, lock {version}")
    assert not drift, "the environment is not the lock (make clean && make test): " + "; ".join(drift)
