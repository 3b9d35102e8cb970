"""The operator's own small Kubernetes API client: the few calls kopf does not make for us.

kopf watches EventPipelines and posts events; scaling a workload, annotating its pods, writing the
status from the poll loop and reading Secrets go through this client, with the same credentials
the kopf login handler found (:class:`kopf.ConnectionInfo`).
"""

from __future__ import annotations

import base64
import ssl
from typing import Any

import aiohttp
import kopf

__all__ = ["Kube", "KubeError", "pipeline_path", "workload_path"]

_MERGE = {"Content-Type": "application/merge-patch+json"}


class KubeError(Exception):
    """A Kubernetes API request failed; carries the HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _ssl(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    context = ssl.create_default_context(
        cafile=str(info.ca_path) if info.ca_path else None,
        cadata=info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data,
    )
    if info.certificate_path and info.private_key_path:
        context.load_cert_chain(str(info.certificate_path), str(info.private_key_path))
    return context


class Kube:
    """An aiohttp session against one API server."""

    def __init__(self, info: kopf.ConnectionInfo, timeout_s: float = 10.0) -> None:
        headers = {"Accept": "application/json"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        elif info.username:
            raw = f"{info.username}:{info.password or ''}".encode()
            headers["Authorization"] = f"Basic {base64.b64encode(raw).decode()}"
        self.server = info.server.rstrip("/")
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            connector=aiohttp.TCPConnector(ssl=_ssl(info)),
        )

    async def close(self) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; its JSON answer, or :class:`KubeError`."""
        try:
            async with self._session.request(method, self.server + path, **kwargs) as response:
                if response.status >= 400:
                    raise KubeError(response.status, (await response.text())[:300])
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(0, f"{type(exc).__name__}: {exc}") from exc

    async def get(self, path: str, **params: str) -> Any:
        return await self.request("GET", path, params=params or None)

    async def merge_patch(self, path: str, body: dict[str, Any]) -> Any:
        return await self.request("PATCH", path, json=body, headers=_MERGE)


def workload_path(namespace: str, plural: str, name: str) -> str:
    """API path of a Deployment or StatefulSet."""
    return f"/apis/apps/v1/namespaces/{namespace}/{plural}/{name}"


def pipeline_path(namespace: str, name: str) -> str:
    """API path of an EventPipeline."""
    return f"/apis/medevents.io/v1alpha1/namespaces/{namespace}/eventpipelines/{name}"
