"""Partition consumers (created idempotently, never silently changed) and the fence's stream lookup."""

from __future__ import annotations

import logging

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError

from medevents import topology
from medevents.natsconn import NO_SUITABLE_PEERS, until_led

__all__ = [
    "CRITICAL_FIELDS",
    "FenceLookupError",
    "consumer_mismatches",
    "ensure_consumer",
    "first_pending",
]

log = logging.getLogger("medevents.processor")

# Fields whose difference breaks correctness: the pod does not pull such a partition.
CRITICAL_FIELDS = ("filter_subject", "ack_policy", "deliver_policy")
_COMPARED = (*CRITICAL_FIELDS, "max_deliver", "ack_wait", "max_ack_pending")
_NO_MESSAGE = 10037  # JetStream: no message found


def _normal(field: str, value: object) -> object:
    if field == "max_deliver" and isinstance(value, int) and value <= 0:
        return -1  # unlimited, however the server spells it
    if field == "ack_wait" and isinstance(value, float | int):
        return round(float(value), 3)
    return value


def consumer_mismatches(want: api.ConsumerConfig, have: api.ConsumerConfig) -> list[tuple[str, str]]:
    """``(field, description)`` for every compared setting where the existing consumer differs."""
    out = []
    for field in _COMPARED:
        w, h = _normal(field, getattr(want, field)), _normal(field, getattr(have, field))
        if w != h:
            out.append((field, f"{field}: configured {w!r}, consumer has {h!r}"))
    return out


async def ensure_consumer(
    js: JetStreamContext, partition: int, *, ack_wait_s: float, max_ack_pending: int
) -> tuple[api.ConsumerInfo, list[tuple[str, str]]]:
    """Create partition ``partition``'s durable consumer if missing; never change an existing one.

    Returns its info and how it differs from this pod's configuration (logged here; changing a
    live consumer is the operator's decision).
    """
    want = topology.consumer_config(partition, ack_wait_s=ack_wait_s, max_ack_pending=max_ack_pending)
    name = topology.consumer_name(partition)

    async def get_or_create() -> api.ConsumerInfo:
        info: api.ConsumerInfo
        try:
            info = await js.consumer_info(topology.STREAM, name)
        except NotFoundError:
            try:
                info = await js.add_consumer(topology.STREAM, want)
                log.info("consumer created", extra={"partition": partition, "consumer": name})
            except BadRequestError as exc:
                if exc.err_code == NO_SUITABLE_PEERS:
                    raise  # a cluster still forming: until_led tries again
                # another pod created it first, maybe with other settings
                info = await js.consumer_info(topology.STREAM, name)
        return info

    # On a cluster a consumer just created (here or by a pod starting alongside) has no leader
    # for a moment: wait for one rather than fail start-up.
    info = await until_led(f"consumer {name}", get_or_create)
    mismatches = consumer_mismatches(want, info.config)
    for _, description in mismatches:
        log.warning(
            "consumer differs from configuration", extra={"partition": partition, "diff": description}
        )
    return info, mismatches


class FenceLookupError(Exception):
    """The stream did not answer the fence's lookup (transient: retried).

    ``answered`` tells an error reply (the stream has no leader: JetStream says so at once) from
    no reply at all within the timeout.
    """

    def __init__(self, reason: str, *, answered: bool) -> None:
        super().__init__(reason)
        self.answered = answered


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0


class _StoredSeq(msgspec.Struct):
    seq: int


class _MsgGet(msgspec.Struct):
    message: _StoredSeq | None = None
    error: _ApiError | None = None


_decode_get = msgspec.json.Decoder(_MsgGet).decode
_encode = msgspec.json.Encoder().encode


async def first_pending(nc: NATS, subject: str, after: int, timeout: float) -> int | None:
    """The sequence of the first message still in stream EVENTS on ``subject`` after ``after``.

    ``subject`` is the stored subject (``events.<partition>.<token>``; the publish subject finds
    nothing). A non-direct get: the stream leader answers, never a lagging replica. Only the
    sequence is decoded, not the payload.
    """
    request = _encode({"seq": after + 1, "next_by_subj": subject})
    try:
        reply = await nc.request(f"$JS.API.STREAM.MSG.GET.{topology.STREAM}", request, timeout=timeout)
    except TimeoutError as exc:  # nats.errors.TimeoutError is a TimeoutError
        raise FenceLookupError("no answer", answered=False) from exc
    except nats.errors.Error as exc:  # no responders, connection closed or reconnecting
        raise FenceLookupError(type(exc).__name__, answered=True) from exc
    answer = _decode_get(reply.data)
    if answer.error is not None:
        if answer.error.err_code == _NO_MESSAGE:
            return None
        raise FenceLookupError(f"JetStream error {answer.error.err_code}", answered=True)
    if answer.message is None:
        raise FenceLookupError("empty answer", answered=True)
    return answer.message.seq
