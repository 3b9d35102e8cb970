"""Membership and live tuning through NATS KV: heartbeat this pod's :class:`Member` record, list
the live members, read the operator's :class:`Tuning`."""

from __future__ import annotations

import logging

import msgspec
from nats.js import JetStreamContext, api
from nats.js.errors import KeyDeletedError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from medevents import topology
from medevents.cluster import Member, Tuning, decode_member, decode_tuning, encode
from medevents.natsconn import until_led

__all__ = ["Registry"]

log = logging.getLogger("medevents.processor")


async def _bucket(js: JetStreamContext, name: str, create: api.KeyValueConfig) -> KeyValue:
    """Bind the bucket, creating it when missing; on a cluster, once its stream has a leader (a
    bucket just created, here or by a pod starting alongside, has none for a moment)."""

    async def get_or_create() -> api.StreamInfo:
        try:
            return await js.stream_info(f"KV_{name}")
        except NotFoundError:
            await js.create_key_value(create)
            return await js.stream_info(f"KV_{name}")

    await until_led(f"KV bucket {name}", get_or_create)
    return await js.key_value(name)


class Registry:
    """The two KV buckets as this pod uses them."""

    def __init__(self, js: JetStreamContext, member_id: str, *, ttl_s: float, replicas: int) -> None:
        self._js = js
        self._member_id = member_id
        self._ttl = ttl_s
        self._replicas = replicas
        self._members: KeyValue | None = None
        self._tuning: KeyValue | None = None

    async def open(self) -> None:
        """Bind the buckets, creating them when missing (the first pod or the operator does)."""
        self._members = await _bucket(
            self._js, topology.MEMBERS_BUCKET, topology.members_bucket_config(self._ttl, self._replicas)
        )
        self._tuning = await _bucket(
            self._js, topology.TUNING_BUCKET, topology.tuning_bucket_config(self._replicas)
        )

    async def heartbeat(self, member: Member) -> None:
        assert self._members is not None
        await self._members.put(self._member_id, encode(member))

    async def leave(self) -> None:
        assert self._members is not None
        await self._members.purge(self._member_id)

    async def members(self) -> list[Member]:
        """Live members: records not yet expired by the bucket's TTL."""
        assert self._members is not None
        stream = f"KV_{topology.MEMBERS_BUCKET}"
        prefix = f"$KV.{topology.MEMBERS_BUCKET}."
        info = await self._js.stream_info(stream, subjects_filter=f"{prefix}>")
        out = []
        for subject in info.state.subjects or {}:
            try:
                entry = await self._members.get(subject.removeprefix(prefix))
            except (KeyNotFoundError, KeyDeletedError, NotFoundError):
                continue
            if entry.value:
                try:
                    out.append(decode_member(entry.value))
                except msgspec.DecodeError:
                    log.warning("unreadable member record", extra={"key": entry.key})
        return out

    async def tuning(self) -> Tuning | None:
        """The operator's tuning, or None when it published none."""
        assert self._tuning is not None
        try:
            entry = await self._tuning.get(topology.TUNING_KEY)
        except (KeyNotFoundError, KeyDeletedError, NotFoundError):
            return None
        if not entry.value:
            return None
        try:
            return decode_tuning(entry.value)
        except msgspec.DecodeError:
            log.warning("unreadable tuning record; keeping the current settings")
            return None
