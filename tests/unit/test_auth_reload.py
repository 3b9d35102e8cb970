"""The bearer-token file is re-read when it changes, at most once per interval, and a reload can
change the tokens but never turn authentication off."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request

from medevents.config import IngestSettings
from medevents.ingest._auth import BearerAuth
from medevents.problems import ProblemResponse


def request(token: str | None) -> Request:
    headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode())]
    return Request({"type": "http", "method": "POST", "path": "/events", "headers": headers,
                    "client": ("10.0.0.7", 5000)})  # fmt: skip


def allowed(auth: BearerAuth, token: str | None) -> bool:
    return not isinstance(auth.check(request(token)), ProblemResponse)


def test_reload_follows_the_file_at_the_configured_pace(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("one\n")
    now = [0.0]
    auth = BearerAuth(IngestSettings(auth_tokens_file=str(path)), reload_every_s=5.0, clock=lambda: now[0])
    assert allowed(auth, "one") and not allowed(auth, "two") and not allowed(auth, None)
    path.write_text("two\n")
    now[0] = 4.9
    assert allowed(auth, "one"), "not re-read before the interval"
    now[0] = 5.0
    assert allowed(auth, "two") and not allowed(auth, "one")
    path.write_text("")
    now[0] = 10.0
    assert allowed(auth, "two"), "an emptied file keeps the tokens in force"
    assert auth.enabled


def test_keys_identify_tokens_without_holding_them() -> None:
    auth = BearerAuth(IngestSettings(auth_tokens="alpha,beta"))
    keys = {auth.check(request("alpha")), auth.check(request("beta"))}
    assert len(keys) == 2
    assert all(isinstance(k, str) and k.startswith("token:") and "alpha" not in k for k in keys)


def test_auth_off_keys_by_address() -> None:
    auth = BearerAuth(IngestSettings())
    assert not auth.enabled
    assert auth.check(request(None)) == "addr:10.0.0.7"
