"""The ingest reaches a nats-server that demands credentials and TLS, configured only through the
documented environment variables (NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED_FILE,
NATS_TLS_CA_FILE, NATS_TLS_CERT_FILE/NATS_TLS_KEY_FILE); a wrong or missing secret is refused."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import nkeys
import pytest
import trustme

from medevents.config import IngestSettings, MongoSettings, NatsSettings, load
from medevents.local import EmbeddedNats, free_port
from medevents.natsconn import NatsUnavailable, connect

from .conftest import start_ingest

EVENT = msgspec.json.encode(
    {"patientId": "p-1", "type": "vitals", "data": {"v": 1}, "ts": "2025-10-01T10:30:00Z"}
)
PASSWORD = "pw-" + os.urandom(8).hex()
TOKEN = "tok-" + os.urandom(8).hex()


class Pki:
    def __init__(self, root: Path) -> None:
        ca = trustme.CA()
        self.ca_file = root / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        server = ca.issue_cert("127.0.0.1", "localhost")
        self.server_cert, self.server_key = root / "server.pem", root / "server.key"
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))
        server.private_key_pem.write_to_path(str(self.server_key))
        client = ca.issue_cert("ingest@medevents")
        self.client_cert, self.client_key = root / "client.pem", root / "client.key"
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        client.private_key_pem.write_to_path(str(self.client_key))
        other = trustme.CA()  # a CA the server does not trust
        self.other_ca_file = root / "other-ca.pem"
        other.cert_pem.write_to_path(str(self.other_ca_file))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@contextlib.contextmanager
def secured_nats(tmp_path: Path, config: str) -> Iterator[EmbeddedNats]:
    path = tmp_path / "nats.conf"
    path.write_text(config)
    server = EmbeddedNats(tmp_path / "nats", config=path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def ingest_accepts_an_event(nats_settings: NatsSettings, mongo_settings: MongoSettings) -> None:
    running, server, task = await start_ingest(
        nats_settings, mongo_settings, IngestSettings(port=free_port())
    )
    try:
        response = await running.client.post(
            "/events", content=EVENT, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 202, response.text
        assert (await running.client.get("/readyz")).status_code == 200
    finally:
        await running.client.aclose()
        server.should_exit = True
        await task


async def refused(settings: NatsSettings) -> str:
    """The first connection fails promptly with a reason, never quoting a secret."""
    with pytest.raises(NatsUnavailable) as caught:
        await connect(settings, "test")
    text = str(caught.value)
    assert PASSWORD not in text and TOKEN not in text
    return text


async def test_user_password_over_tls(tmp_path: Path, pki: Pki, mongo_settings: MongoSettings) -> None:
    config = f"""
        authorization {{ users = [ {{ user: "ingest", password: "{PASSWORD}" }} ] }}
        tls {{ cert_file: "{pki.server_cert}", key_file: "{pki.server_key}" }}
    """
    with secured_nats(tmp_path, config) as server:
        env = {
            "NATS_URL": server.url,
            "NATS_USER": "ingest",
            "NATS_PASSWORD": PASSWORD,
            "NATS_TLS_CA_FILE": str(pki.ca_file),
        }
        await ingest_accepts_an_event(load(NatsSettings, env), mongo_settings)
        assert "authorization violation" in await refused(
            load(NatsSettings, {**env, "NATS_PASSWORD": "wrong"})
        )
        await refused(load(NatsSettings, {k: v for k, v in env.items() if k != "NATS_PASSWORD"}))
        text = await refused(load(NatsSettings, {**env, "NATS_TLS_CA_FILE": str(pki.other_ca_file)}))
        assert "TLS failed: CERTIFICATE_VERIFY_FAILED" in text, text
        # Without a CA file the system's store is used, which does not know this CA either.
        await refused(load(NatsSettings, {k: v for k, v in env.items() if k != "NATS_TLS_CA_FILE"}))


async def test_mutual_tls(tmp_path: Path, pki: Pki, mongo_settings: MongoSettings) -> None:
    config = f"""
        tls {{ cert_file: "{pki.server_cert}", key_file: "{pki.server_key}",
               ca_file: "{pki.ca_file}", verify: true }}
    """
    with secured_nats(tmp_path, config) as server:
        env = {
            "NATS_URL": server.url,
            "NATS_TLS_CA_FILE": str(pki.ca_file),
            "NATS_TLS_CERT_FILE": str(pki.client_cert),
            "NATS_TLS_KEY_FILE": str(pki.client_key),
        }
        await ingest_accepts_an_event(load(NatsSettings, env), mongo_settings)
        await refused(load(NatsSettings, {"NATS_URL": server.url, "NATS_TLS_CA_FILE": str(pki.ca_file)}))


async def test_token(tmp_path: Path, mongo_settings: MongoSettings) -> None:
    with secured_nats(tmp_path, f'authorization {{ token: "{TOKEN}" }}\n') as server:
        env = {"NATS_URL": server.url, "NATS_TOKEN": TOKEN}
        await ingest_accepts_an_event(load(NatsSettings, env), mongo_settings)
        await refused(load(NatsSettings, {**env, "NATS_TOKEN": TOKEN + "x"}))
        await refused(load(NatsSettings, {"NATS_URL": server.url}))


async def test_nkey_seed_file(tmp_path: Path, mongo_settings: MongoSettings) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    seed_file.chmod(0o600)
    other = tmp_path / "other.nk"
    other.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    with secured_nats(tmp_path, f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n') as server:
        env = {"NATS_URL": server.url, "NATS_NKEY_SEED_FILE": str(seed_file)}
        await ingest_accepts_an_event(load(NatsSettings, env), mongo_settings)
        await refused(load(NatsSettings, {**env, "NATS_NKEY_SEED_FILE": str(other)}))


async def test_plain_client_cannot_talk_to_a_tls_server(tmp_path: Path, pki: Pki) -> None:
    config = f'tls {{ cert_file: "{pki.server_cert}", key_file: "{pki.server_key}" }}\n'
    with secured_nats(tmp_path, config) as server:
        await refused(NatsSettings(url=server.url))


def test_ingest_with_a_wrong_password_stops_with_the_reason(tmp_path: Path, mongo_uri: str) -> None:
    """`medevents ingest` does not hang on a refused NATS login: it exits, saying why, and its
    output holds neither the wrong nor the right password."""
    config = f'authorization {{ users = [ {{ user: "u", password: "{PASSWORD}" }} ] }}\n'
    with secured_nats(tmp_path, config) as server:
        wrong = "wrong-" + os.urandom(6).hex()
        env = {**os.environ, "NATS_URL": server.url, "NATS_USER": "u", "NATS_PASSWORD": wrong,
               "MONGO_URI": mongo_uri, "PORT": str(free_port()), "HOST": "127.0.0.1"}  # fmt: skip
        medevents = str(Path(sys.executable).parent / "medevents")
        result = subprocess.run([medevents, "ingest"], env=env, capture_output=True, text=True, timeout=60,
                                check=False)  # fmt: skip
        assert result.returncode != 0
        output = result.stdout + result.stderr
        assert "authorization violation" in output, output[-2000:]
        assert wrong not in output and PASSWORD not in output


async def test_no_server_at_start_up_fails_fast() -> None:
    """Nothing listening: the first connection gives up after trying each server twice (it used to
    retry forever, so a misconfigured pod hung instead of crash-looping with a reason)."""
    url = f"nats://127.0.0.1:{free_port()},nats://127.0.0.1:{free_port()}"
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(30):
        text = await refused(NatsSettings(url=url, connect_timeout_s=1))
    assert "connection refused" in text
    assert loop.time() - started < 30
