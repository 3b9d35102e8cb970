"""Rendezvous hashing: every partition has one owner, and membership changes move few of them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from medevents.cluster import Member, owned_partitions, preferred_owner

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


@given(members, st.integers(1, 64))
def test_every_partition_has_exactly_one_owner(ids: list[str], partitions: int) -> None:
    records = [Member(i, i, 0, 1, [], 0.0) for i in ids]
    owned = [p for i in ids for p in owned_partitions(i, records, partitions)]
    assert sorted(owned) == list(range(partitions))


@given(members, st.integers(1, 32))
def test_draining_members_own_nothing_and_others_cover_them(ids: list[str], partitions: int) -> None:
    records = [Member(i, i, 0, 1, [], 0.0, draining=n == 0) for n, i in enumerate(ids)]
    assert owned_partitions(ids[0], records, partitions) == []
    if len(ids) > 1:
        owned = [p for i in ids[1:] for p in owned_partitions(i, records, partitions)]
        assert sorted(owned) == list(range(partitions))


def test_a_member_missing_from_the_records_counts_itself_in() -> None:
    assert owned_partitions("me", [], 4) == [0, 1, 2, 3]
