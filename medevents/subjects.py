"""Patient ids as NATS subject tokens, and the partition a token lands in.

NATS subject tokens may not hold `.`, `*`, `>` or white space, and patient ids may (OIDs such as
``2.16.840.1``). Ids made only of ``[A-Za-z0-9_-]`` are used as they are; any other id becomes
``~`` + unpadded base64url of its UTF-8, which is reversible and can never collide with a plain id.
"""

from __future__ import annotations

import base64
import re

__all__ = [
    "INGEST_PREFIX",
    "ingest_subject",
    "partition_filter",
    "partition_of",
    "patient_id",
    "patient_token",
    "stored_subject",
    "token_of_stored",
]

INGEST_PREFIX = "events"
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_ENCODED = "~"


def patient_token(patient_id: str) -> str:
    """The subject token for ``patient_id``."""
    if _PLAIN.fullmatch(patient_id):
        return patient_id
    raw = base64.urlsafe_b64encode(patient_id.encode("utf-8")).rstrip(b"=")
    return _ENCODED + raw.decode("ascii")


def patient_id(token: str) -> str:
    """The patient id that :func:`patient_token` turned into ``token``."""
    if not token.startswith(_ENCODED):
        return token
    raw = token[1:].encode("ascii")
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4)).decode("utf-8")


def ingest_subject(token: str) -> str:
    """Where ingest publishes; the stream's transform adds the partition."""
    return f"{INGEST_PREFIX}.{token}"


def stored_subject(partition: int, token: str) -> str:
    """The subject a message is stored under: ``events.<partition>.<token>``."""
    return f"{INGEST_PREFIX}.{partition}.{token}"


def partition_filter(partition: int) -> str:
    return f"{INGEST_PREFIX}.{partition}.*"


def token_of_stored(subject: str) -> tuple[int, str]:
    """``events.<p>.<token>`` -> (p, token)."""
    _, partition, token = subject.split(".", 2)
    return int(partition), token


def partition_of(token: str, partitions: int) -> int:
    """The partition nats-server's ``{{partition(P,1)}}`` transform picks: FNV-1a (32 bit) of the
    token, modulo P. Lets clients and tests know where a patient lives without asking."""
    h = 0x811C9DC5
    for byte in token.encode("utf-8"):
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % partitions
