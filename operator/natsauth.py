"""NATS connection settings for one EventPipeline: its URL, credentials and TLS from Secrets.

Secret values that nats-py wants as files (a .creds file, CA, client certificate and key) are
written to a private directory (mode 0700) that lives as long as the pipeline's connection.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from pathlib import Path

from medevents.config import NatsSettings, SettingsError

from .kube import Kube, KubeError
from .spec import NatsRef

__all__ = ["NatsAuth", "SecretError"]


class SecretError(Exception):
    """A referenced Secret or key is missing or unreadable; the message names it."""


async def _secret(kube: Kube, namespace: str, name: str) -> dict[str, bytes]:
    try:
        body = await kube.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
    except KubeError as exc:
        raise SecretError(f"Secret {namespace}/{name}: {exc}") from None
    return {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}


class NatsAuth:
    """Builds :class:`NatsSettings` for a pipeline; owns the files it writes."""

    def __init__(self) -> None:
        self._dir: Path | None = None

    def _write(self, name: str, data: bytes) -> str:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="medevents-nats-"))
        path = self._dir / name
        path.write_bytes(data)
        path.chmod(0o600)
        return str(path)

    async def settings(self, kube: Kube, namespace: str, ref: NatsRef) -> NatsSettings:
        """The settings for ``ref``; :class:`SecretError` or :class:`SettingsError` when unusable."""
        fields: dict[str, str] = {"url": ref.url}
        if ref.credentials_secret:
            data = await _secret(kube, namespace, ref.credentials_secret)
            if "creds" in data:
                fields["creds_file"] = self._write("nats.creds", data["creds"])
            elif "token" in data:
                fields["token"] = data["token"].decode()
            elif "user" in data:
                fields["user"] = data["user"].decode()
                fields["password"] = data.get("password", b"").decode()
            else:
                raise SecretError(
                    f"Secret {namespace}/{ref.credentials_secret}: "
                    "expected key creds, token or user (+ password)"
                )
        if ref.tls.secret:
            data = await _secret(kube, namespace, ref.tls.secret)
            if "ca.crt" in data:
                fields["tls_ca_file"] = self._write("ca.crt", data["ca.crt"])
            if "tls.crt" in data and "tls.key" in data:
                fields["tls_cert_file"] = self._write("tls.crt", data["tls.crt"])
                fields["tls_key_file"] = self._write("tls.key", data["tls.key"])
        if ref.tls.enabled and not any(u.startswith("tls://") for u in fields["url"].split(",")):
            fields["url"] = ",".join(
                u.strip().replace("nats://", "tls://", 1) for u in fields["url"].split(",")
            )
        try:
            return NatsSettings(**fields)  # type: ignore[arg-type]
        except SettingsError as exc:
            raise SettingsError(f"spec.nats: {exc}") from None

    def cleanup(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
