"""Security settings: rate limit and token file variables, and secrets kept out of messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from medevents.config import IngestSettings, MongoSettings, NatsSettings, SettingsError, load, redact_url


def test_rate_limit_defaults_off_and_is_configurable() -> None:
    default = load(IngestSettings, {})
    assert (default.rate_limit_per_s, default.rate_limit_burst) == (0.0, 100)
    custom = load(IngestSettings, {"INGEST_RATE_LIMIT_PER_S": "50", "INGEST_RATE_LIMIT_BURST": "200"})
    assert (custom.rate_limit_per_s, custom.rate_limit_burst) == (50.0, 200)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"INGEST_RATE_LIMIT_PER_S": "-1"}, "INGEST_RATE_LIMIT_PER_S"),
        ({"INGEST_RATE_LIMIT_PER_S": "fast"}, "INGEST_RATE_LIMIT_PER_S"),
        ({"INGEST_RATE_LIMIT_BURST": "0"}, "INGEST_RATE_LIMIT_BURST"),
    ],
)
def test_bad_rate_limit_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}:"):
        load(IngestSettings, env)


def test_token_file_and_variable_combine(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("file-a\n\n  file-b \n")
    settings = load(
        IngestSettings, {"INGEST_AUTH_TOKENS": "env-a, ,env-b", "INGEST_AUTH_TOKENS_FILE": str(path)}
    )
    assert settings.tokens() == ("env-a", "env-b", "file-a", "file-b")


@pytest.mark.parametrize("content", [b"", b"\n \n", b"\xff\xfe"])
def test_an_empty_or_unreadable_token_file_never_means_auth_off(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "tokens"
    path.write_bytes(content)
    with pytest.raises(SettingsError, match=r"^INGEST_AUTH_TOKENS_FILE:"):
        load(IngestSettings, {"INGEST_AUTH_TOKENS_FILE": str(path)}).tokens()


def test_redact_url() -> None:
    assert redact_url("mongodb://app:s3cret@db:27017/x?tls=true") == "mongodb://app:***@db:27017/x?tls=true"
    assert redact_url("nats://t0ken@nats:4222") == "nats://***@nats:4222"
    assert redact_url("mongodb://db:27017/x") == "mongodb://db:27017/x"


def test_bad_urls_are_reported_without_their_password() -> None:
    with pytest.raises(SettingsError) as mongo:
        load(MongoSettings, {"MONGO_URI": "http://app:s3cret@db/x"})
    with pytest.raises(SettingsError) as nats:
        load(NatsSettings, {"NATS_URL": "http://user:s3cret@nats:4222"})
    for caught in (mongo, nats):
        assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


async def test_mongo_uri_options_reach_the_driver() -> None:
    """TLS and auth live in MONGO_URI and are passed to pymongo untouched (no connection made)."""
    from medevents import store

    uri = "mongodb://app:s3cret@db.example:27017/medical?tls=true&authSource=admin"
    client = store.mongo_client(MongoSettings(uri=uri), "test")
    try:
        pool = client.options.pool_options
        credentials = pool._credentials  # pymongo keeps them private; read only to check
        assert credentials is not None
        assert (credentials.username, credentials.source) == ("app", "admin")
        assert pool._ssl_context is not None, "tls=true turns TLS on"
    finally:
        await client.close()
