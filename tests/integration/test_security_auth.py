"""Bearer-token auth and the per-client rate limit against the running ingest service.

Semantics (docs/SECURITY.md): every credential failure is 401 with ``WWW-Authenticate``; there
are no scopes, so no 403. Probes are open. A rejected request publishes nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from nats.js import JetStreamContext

from medevents.config import IngestSettings, MongoSettings, NatsSettings, SettingsError
from medevents.ingest import IngestService

from .conftest import RunningIngest, running_ingest

JSON = {"Content-Type": "application/json"}
PROBES = ("/health", "/livez", "/readyz", "/metrics", "/openapi.json")

Starter = Callable[..., Any]


def event(i: int) -> bytes:
    return msgspec.json.encode(
        {"patientId": f"p-{i}", "type": "vitals", "data": {"i": i}, "ts": "2025-10-01T10:30:00Z"}
    )


async def post(ingest: RunningIngest, i: int, token: str | None = None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await ingest.client.post("/events", content=event(i), headers={**JSON, **headers})


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert body["type"].startswith("urn:medevents:problem:")
    return body


async def test_401_semantics_and_open_probes(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    async with running_ingest(nats_settings, mongo_settings, auth_tokens="alpha-token, beta-token") as ingest:
        bad: list[dict[bytes, bytes]] = [
            {},
            {b"Authorization": b""},
            {b"Authorization": b"Bearer"},
            {b"Authorization": b"Basic YWxwaGEtdG9rZW4="},
            {b"Authorization": b"Bearer alpha-token-but-longer"},
            {b"Authorization": b"Bearer alpha"},
            {b"Authorization": b"Bearer ALPHA-TOKEN"},
            {b"Authorization": b"Bearer alpha-token,beta-token"},
            {b"Authorization": b"Bearer \xc3\xa9\xff"},
        ]
        for headers in bad:
            headers[b"Content-Type"] = b"application/json"
            response = await ingest.client.post("/events", content=event(0), headers=headers)
            body = assert_problem(response, 401)
            assert body["type"] == "urn:medevents:problem:unauthorized"
            assert response.headers["www-authenticate"].startswith('Bearer realm="medevents"')
            assert "alpha" not in response.text and "beta" not in response.text, "no token echoed"
        for path in ("/events/batch",):
            assert_problem(await ingest.client.post(path, content=b"[]", headers=JSON), 401)
        assert_problem(await ingest.client.get("/events/some-id"), 401)
        assert (await js.stream_info("EVENTS")).state.messages == 0, "nothing published without auth"

        # Either token works (rotation: old and new side by side); scheme is case-insensitive.
        assert (await post(ingest, 1, "alpha-token")).status_code == 202
        assert (await post(ingest, 2, "beta-token")).status_code == 202
        response = await ingest.client.post(
            "/events", content=event(3), headers={**JSON, "Authorization": "bearer  beta-token"}
        )
        assert response.status_code == 202
        for path in PROBES:
            assert (await ingest.client.get(path)).status_code == 200, path
        assert (await js.stream_info("EVENTS")).state.messages == 3


async def test_tokens_rotate_through_the_file_without_restart(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, tmp_path: Path
) -> None:
    secret = tmp_path / "tokens"
    secret.write_text("first-token\n\n  second-token  \n")
    async with running_ingest(nats_settings, mongo_settings, auth_tokens_file=str(secret)) as ingest:
        ingest.service.auth._reload_every = 0.0  # check the file on every request in this test
        assert (await post(ingest, 1, "first-token")).status_code == 202
        assert (await post(ingest, 2, "second-token")).status_code == 202

        # Rotate as Kubernetes does: a new file swapped in atomically.
        replacement = tmp_path / "tokens.new"
        replacement.write_text("second-token\nthird-token\n")
        os.replace(replacement, secret)
        assert (await post(ingest, 3, "first-token")).status_code == 401
        assert (await post(ingest, 4, "third-token")).status_code == 202
        assert (await post(ingest, 5, "second-token")).status_code == 202

        # An emptied or missing file never opens the door: the tokens in force stay.
        secret.write_text("")
        assert (await post(ingest, 6)).status_code == 401
        assert (await post(ingest, 7, "third-token")).status_code == 202
        secret.unlink()
        assert (await post(ingest, 8)).status_code == 401
        assert (await post(ingest, 9, "third-token")).status_code == 202


def test_a_token_file_that_is_empty_or_unreadable_stops_start_up(
    tmp_path: Path, nats_settings: NatsSettings, mongo_settings: MongoSettings
) -> None:
    from medevents.config import StreamSettings

    empty = tmp_path / "empty"
    empty.write_text("\n  \n")
    for path in (empty, tmp_path / "missing"):
        with pytest.raises(SettingsError, match="INGEST_AUTH_TOKENS_FILE"):
            IngestService(
                IngestSettings(auth_tokens_file=str(path)), nats_settings, StreamSettings(), mongo_settings
            )


async def test_rate_limit_per_token(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    async with running_ingest(
        nats_settings, mongo_settings, auth_tokens="tok-a,tok-b", rate_limit_per_s=0.2, rate_limit_burst=3
    ) as ingest:
        statuses = [(await post(ingest, i, "tok-a")).status_code for i in range(3)]
        assert statuses == [202, 202, 202]
        limited = await post(ingest, 99, "tok-a")
        body = assert_problem(limited, 429)
        assert body["type"] == "urn:medevents:problem:rate-limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 5
        # Batches and reads count too; another token has its own bucket; probes are never limited.
        assert_problem(
            await ingest.client.post(
                "/events/batch", content=b"[]", headers={**JSON, "Authorization": "Bearer tok-a"}
            ),
            429,
        )
        assert (await post(ingest, 10, "tok-b")).status_code == 202
        for path in PROBES:
            assert (await ingest.client.get(path)).status_code == 200
        # A bad token is 401, not 429, and does not spend the real token's budget.
        assert (await post(ingest, 11, "wrong")).status_code == 401
        assert (await js.stream_info("EVENTS")).state.messages == 4, "a limited request publishes nothing"

        retry = int(limited.headers["retry-after"])
        await asyncio.sleep(retry)
        assert (await post(ingest, 12, "tok-a")).status_code == 202, "Retry-After was long enough"


async def test_rate_limit_per_address_when_auth_is_off(
    nats_settings: NatsSettings, mongo_settings: MongoSettings
) -> None:
    limited = {"rate_limit_per_s": 0.1, "rate_limit_burst": 2}
    async with running_ingest(nats_settings, mongo_settings, **limited) as ingest:
        statuses = [(await post(ingest, i)).status_code for i in range(4)]
        assert statuses == [202, 202, 429, 429]
        # Another address (127.0.0.2 is loopback too on Linux) has its own bucket.
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=ingest.url, transport=transport) as other:
            response = await other.post("/events", content=event(50), headers=JSON)
        assert response.status_code == 202


async def test_no_limit_by_default(ingest: RunningIngest) -> None:
    statuses = await asyncio.gather(*(post(ingest, i) for i in range(300)))
    assert {r.status_code for r in statuses} == {202}
