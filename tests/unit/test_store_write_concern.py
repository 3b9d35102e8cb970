"""MongoDB writes wait for the journal unless ``MONGO_URI`` says otherwise."""

from __future__ import annotations

import pytest

from medevents.store import default_write_concern

BASE = "mongodb://db:27017/medical_events?directConnection=true"


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://db:27017/medical_events",
        BASE,
        "mongodb://a,b,c/medical_events?replicaSet=rs0",
        "mongodb+srv://cluster.example/medical_events?retryWrites=false",
        BASE + "&wtimeoutMS=5000",  # a timeout alone keeps the default concern
    ],
)
def test_default_is_journaled_majority(uri: str) -> None:
    assert default_write_concern(uri) == {"w": "majority", "journal": True}


@pytest.mark.parametrize(
    "uri",
    [
        BASE + "&w=1",
        BASE + "&journal=false",
        BASE + "&W=2",  # URI options are case-insensitive
        BASE + "&Journal=true&w=majority",
    ],
)
def test_an_explicit_uri_concern_wins_whole(uri: str) -> None:
    assert default_write_concern(uri) == {}
