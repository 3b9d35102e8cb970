"""Start-up connection errors name the cause without quoting secrets or subjects."""

from __future__ import annotations

import ssl

import nats.errors

from medevents.natsconn import _host_port, _reason


def test_server_urls_lose_their_credentials() -> None:
    assert _host_port("nats://user:s3cret@nats.example:4222") == "nats.example:4222"
    assert _host_port("tls://tok3n@10.0.0.1:4443") == "10.0.0.1:4443"
    assert "s3cret" not in _host_port("nats://user:s3cret@host")


def test_the_most_telling_error_wins() -> None:
    auth = nats.errors.Error("nats: 'Authorization Violation'")
    assert _reason([auth, BrokenPipeError()]).startswith("authorization violation")
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.reason = "CERTIFICATE_VERIFY_FAILED"
    assert _reason([verify, ConnectionResetError()]).startswith("TLS failed: CERTIFICATE_VERIFY_FAILED")
    assert _reason([ConnectionRefusedError()]) == "connection refused"
    assert _reason([ConnectionRefusedError(), nats.errors.NoServersError()]) == "connection refused"
    assert _reason([TimeoutError()]) == "timed out"


def test_other_server_errors_are_named_by_type_only() -> None:
    leaky = nats.errors.Error("nats: Permissions Violation for Publish to events.~UGF0aWVudA")
    assert _reason([leaky]) == "Error"
