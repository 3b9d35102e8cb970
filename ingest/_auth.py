"""Optional bearer-token authentication (constant-time comparison; several tokens for rotation)."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from medevents.problems import ProblemResponse, problem

__all__ = ["BearerAuth"]


class BearerAuth:
    def __init__(self, tokens: tuple[str, ...]) -> None:
        self._tokens = tuple(t.encode("utf-8") for t in tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def check(self, request: Request) -> ProblemResponse | None:
        """None when the request may proceed, else the 401 problem to answer."""
        if not self._tokens:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential:
            return problem(
                401,
                "send `Authorization: Bearer <token>`",
                headers={"WWW-Authenticate": 'Bearer realm="medevents"'},
            )
        given = credential.strip().encode("utf-8")
        # Compare against every token, without stopping early, so timing tells nothing.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(given, token)
        if not matched:
            return problem(
                401,
                "the bearer token is not valid",
                headers={"WWW-Authenticate": 'Bearer realm="medevents", error="invalid_token"'},
            )
        return None
