"""The fsync-before-ack check's pure part: reading /varz and the verdict over several servers."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from medevents.natsmonitor import ServerSync, SyncState, parse_varz, verdict

# What nats-server 2.15.1 answers (abridged): `sync_always` is present only with `always`.
ALWAYS = b'{"server_name":"n1","jetstream":{"config":{"sync_interval":120000000000,"sync_always":true}}}'
DEFAULT = b'{"server_name":"n2","jetstream":{"config":{"sync_interval":120000000000,"strict":true}}}'
NO_JETSTREAM = b'{"server_name":"n3","jetstream":{}}'


def test_varz_answers_are_read() -> None:
    assert parse_varz("u", ALWAYS) == ServerSync("u", "n1", jetstream=True, sync_always=True)
    assert parse_varz("u", DEFAULT) == ServerSync("u", "n2", jetstream=True, sync_always=False)
    assert parse_varz("u", NO_JETSTREAM) == ServerSync("u", "n3")
    assert parse_varz("u", b"<html>").error


def test_no_url_is_unknown_not_safe() -> None:
    assert verdict([]).state is SyncState.UNKNOWN
    assert "NATS_MONITOR_URL" in verdict([]).message


def test_one_lazy_server_makes_the_deployment_unsafe_and_is_named() -> None:
    servers = [parse_varz("a", ALWAYS), parse_varz("b", DEFAULT), ServerSync("c", error="timed out")]
    found = verdict(servers)
    assert found.state is SyncState.UNSAFE
    assert "n2" in found.message and "n1" not in found.message
    assert "sync_interval: always" in found.message


def test_an_unreadable_server_makes_an_otherwise_safe_deployment_unknown() -> None:
    found = verdict([parse_varz("a", ALWAYS), ServerSync("http://c:8222", error="timed out")])
    assert found.state is SyncState.UNKNOWN
    assert "http://c:8222" in found.message


servers = st.lists(
    st.builds(
        ServerSync,
        url=st.sampled_from(["http://a:8222", "http://b:8222"]),
        server=st.text(max_size=5),
        jetstream=st.booleans(),
        sync_always=st.booleans(),
        error=st.sampled_from(["", "", "refused"]),
    ),
    max_size=5,
)


@given(servers)
def test_always_only_when_every_server_answered_with_jetstream_fsync(found: list[ServerSync]) -> None:
    state = verdict(found).state
    lazy = any(s.jetstream and not s.sync_always for s in found)
    assert (state is SyncState.UNSAFE) == lazy
    if state is SyncState.ALWAYS:
        assert all(not s.error for s in found)
        assert all(s.sync_always for s in found if s.jetstream)
        assert any(s.jetstream for s in found)


def test_a_real_varz_shape_round_trips() -> None:
    body = msgspec.json.encode({"server_name": "x", "version": "2.15.1", "jetstream": {"config": {}}})
    assert parse_varz("u", body) == ServerSync("u", "x", jetstream=True, sync_always=False)
