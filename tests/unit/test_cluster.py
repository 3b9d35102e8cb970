"""Rendezvous hashing: every partition has one owner, and membership changes move few of them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from medevents.cluster import preferred_owner

members = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=10, unique=True)


@given(members, st.integers(0, 255))
def test_owner_is_a_member_and_independent_of_order(ids: list[str], partition: int) -> None:
    owner = preferred_owner(partition, ids)
    assert owner in ids
    assert owner == preferred_owner(partition, list(reversed(ids)))


@given(members, st.text(min_size=1, max_size=8))
def test_a_joining_member_only_takes_partitions(ids: list[str], newcomer: str) -> None:
    if newcomer in ids:
        return
    for p in range(64):
        after = preferred_owner(p, [*ids, newcomer])
        assert after in (preferred_owner(p, ids), newcomer)


def test_no_members_no_owner() -> None:
    assert preferred_owner(0, []) is None
