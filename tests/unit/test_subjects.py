"""Patient tokens: reversible, always a valid NATS subject token, plain ids untouched."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from medevents.subjects import partition_of, patient_id, patient_token, stored_subject, token_of_stored

_VALID_TOKEN = re.compile(r"[^\s.*>]+")


@given(st.text(min_size=1, max_size=256))
def test_round_trip_and_valid_token(pid: str) -> None:
    token = patient_token(pid)
    assert _VALID_TOKEN.fullmatch(token)
    assert patient_id(token) == pid


@given(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True))
def test_plain_ids_are_used_as_they_are(pid: str) -> None:
    assert patient_token(pid) == pid


@given(st.text(min_size=1), st.text(min_size=1))
def test_distinct_ids_distinct_tokens(a: str, b: str) -> None:
    assert (patient_token(a) == patient_token(b)) == (a == b)


def test_awkward_ids_are_encoded() -> None:
    for pid in ["2.16.840.1", "a*b", "a>b", "with space", "ünïcødé", "~tilde"]:
        assert patient_token(pid).startswith("~")


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=1024))
def test_partition_in_range_and_stored_subject_parses(pid: str, partitions: int) -> None:
    token = patient_token(pid)
    p = partition_of(token, partitions)
    assert 0 <= p < partitions
    assert token_of_stored(stored_subject(p, token)) == (p, token)
