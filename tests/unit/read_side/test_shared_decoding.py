"""Records decoded once per process and shared between consumer groups (SharedDecoding)."""

from __future__ import annotations

import pytest

from events import InvalidEvent, decode_event, encode_event
from projectors.application.consume import SharedDecoding
from tests.integration.read_side.workload import new_campaign


def test_the_second_group_gets_the_envelope_the_first_decoded_and_nothing_stays_kept() -> None:
    decoding = SharedDecoding(size=4)
    raw = encode_event(new_campaign("owner-1").events[0])
    first = decoding.decode(raw)
    assert first == decode_event(raw)
    assert decoding.decode(bytes(bytearray(raw))) is first  # an equal record from the other group's fetch
    assert decoding.decode(raw) is not first  # taken: decoded again
    assert decoding.decode(raw) == first


def test_at_most_size_envelopes_are_kept_oldest_dropped_first() -> None:
    decoding = SharedDecoding(size=2)
    campaign = new_campaign("owner-1")
    campaign.then("CampaignActivated")
    campaign.then("CampaignPaused")
    raws = [encode_event(e) for e in campaign.events]
    kept = [decoding.decode(raw) for raw in raws]
    assert decoding.decode(raws[0]) is not kept[0]  # dropped when the third came
    assert decoding.decode(raws[2]) is kept[2]


def test_an_invalid_record_raises_and_is_not_kept() -> None:
    decoding = SharedDecoding()
    with pytest.raises(InvalidEvent):
        decoding.decode(b"{not json")
    with pytest.raises(InvalidEvent):
        decoding.decode(b"{not json")
