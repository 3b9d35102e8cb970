"""Optional bearer-token authentication: several tokens at once (rotation), constant-time
comparison, and a token file re-read when it changes (a mounted Secret updated in place).

Every credential failure is ``401`` with ``WWW-Authenticate`` (RFC 6750): tokens carry no scopes,
so there is no "authenticated but not allowed" case and the service never answers ``403``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable

from starlette.requests import Request

from medevents.config import IngestSettings, SettingsError
from medevents.problems import ProblemResponse, problem

__all__ = ["BearerAuth"]

log = logging.getLogger("medevents.ingest")

_CHALLENGE = 'Bearer realm="medevents"'


def _digest(token: bytes) -> bytes:
    # Comparing fixed-length digests hides the tokens' lengths as well as their contents.
    return hashlib.sha256(token).digest()


class BearerAuth:
    """Checks ``Authorization: Bearer <token>`` against the configured tokens; off when none."""

    def __init__(
        self,
        settings: IngestSettings,
        *,
        reload_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._file = settings.auth_tokens_file
        self._reload_every = reload_every_s
        self._clock = clock
        self._checked_at = clock()
        self._digests = self._load(settings.tokens())
        self._on = bool(self._digests)  # decided once: a reload can change tokens, never turn auth off

    @staticmethod
    def _load(tokens: tuple[str, ...]) -> tuple[bytes, ...]:
        return tuple(_digest(t.encode("utf-8")) for t in tokens)

    def _maybe_reload(self) -> None:
        """Re-read the token file at most once per ``reload_every_s`` (a few bytes; reading it is
        cheaper and surer than trusting timestamps). An unreadable or empty file keeps the tokens
        in force: a Secret mid-update must not lock clients out, nor let everyone in."""
        now = self._clock()
        if not self._file or now - self._checked_at < self._reload_every:
            return
        self._checked_at = now
        try:
            digests = self._load(self._settings.tokens())
        except SettingsError:
            log.warning("bearer token file unreadable or empty; keeping the tokens in force")
            return
        if digests != self._digests:
            self._digests = digests
            log.info("bearer tokens reloaded", extra={"tokens": len(digests)})

    @property
    def enabled(self) -> bool:
        return self._on

    def check(self, request: Request) -> ProblemResponse | str:
        """The client's rate-limit key when the request may proceed (a hash of its token, or its
        address when auth is off), else the 401 problem to answer."""
        if not self._on:
            return "addr:" + (request.client.host if request.client else "unknown")
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return problem(
                401, "send `Authorization: Bearer <token>`", headers={"WWW-Authenticate": _CHALLENGE}
            )
        self._maybe_reload()
        given = _digest(credential.encode("utf-8", "surrogateescape"))
        # Compare against every token, without stopping early, so timing tells nothing.
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(given, digest)
        if not matched:
            return problem(
                401,
                "the bearer token is not valid",
                headers={"WWW-Authenticate": _CHALLENGE + ', error="invalid_token"'},
            )
        return "token:" + given[:12].hex()
