"""What the console is shown of a parked entry, in both forms the projections write, and the
listing's cursor (readmodels/parked.py)."""

from __future__ import annotations

import orjson
import pytest

from events import encode_event
from readmodels.parked import (
    InvalidCursor,
    ParkedAggregate,
    ParkedEntry,
    campaign_entry,
    describe_entry,
    parked_event,
    parse_cursor,
    unpack_sequence,
)
from tests.integration.read_side.workload import new_campaign

PARKED_AT = "2026-12-02T04:00:00.123Z"


def msgpack_str(text: str) -> bytes:
    data = text.encode()
    if len(data) < 32:
        return bytes([0xA0 | len(data)]) + data
    if len(data) < 256:
        return bytes([0xD9, len(data)]) + data
    return bytes([0xDA]) + len(data).to_bytes(2, "big") + data


def guard_entry(notice: str, change: list[str], parked_at: str | None) -> bytes:
    """What lua/guard.lua parks: cmsgpack.pack(notice, change, projected_at)."""
    packed = msgpack_str(notice) + bytes([0x90 | len(change)]) + b"".join(msgpack_str(c) for c in change)
    return packed + (msgpack_str(parked_at) if parked_at is not None else b"")


def test_a_campaign_entry_names_its_event_and_when_it_was_parked() -> None:
    campaign = new_campaign("owner-1")
    campaign.then("CampaignActivated")
    event = campaign.events[1]
    raw = campaign_entry(encode_event(event), PARKED_AT)

    assert describe_entry(2, raw) == ParkedEntry(
        2, "CampaignActivated", orjson.loads(encode_event(event))["occurred_at"], PARKED_AT
    )
    # The projection and the gap repair read the event back out of it.
    assert orjson.loads(parked_event(raw)) == orjson.loads(encode_event(event))


def test_a_bare_event_parked_before_the_time_was_kept_is_still_named() -> None:
    event = new_campaign("owner-1").events[0]
    raw = encode_event(event)

    entry = describe_entry(1, raw)
    assert (entry.event_type, entry.parked_at) == ("CampaignCreated", None)
    assert parked_event(raw) == raw


def test_a_guard_entry_gives_its_notice_and_parked_time() -> None:
    notice = orjson.dumps({"event_type": "UserRegistered", "occurred_at": "2026-12-01T10:00:00Z"})[:-1]
    long_change = ["email", '"someone@example.com"', "x" * 300]

    entry = describe_entry(3, guard_entry(notice.decode(), long_change, PARKED_AT))

    assert entry == ParkedEntry(3, "UserRegistered", "2026-12-01T10:00:00Z", PARKED_AT)


def test_a_stats_entry_whose_change_leads_with_a_binary_packed_id_is_still_named() -> None:
    # lua/stats.lua's change starts with the aggregate's packed id (16 raw bytes, not UTF-8).
    binary = bytes.fromhex("ff00c3a1" + "00" * 12)
    raw = msgpack_str("") + bytes([0x93, 0xA0 | len(binary)]) + binary
    raw += msgpack_str("campaign") + msgpack_str("2026-12-01T10:00") + msgpack_str(PARKED_AT)

    assert describe_entry(2, raw) == ParkedEntry(2, None, None, PARKED_AT)
    assert unpack_sequence(raw)[1][0] == binary


def test_a_guard_entry_without_notice_or_time_is_shown_with_what_it_has() -> None:
    # A projection that announces nothing parks an empty notice; older entries have no time.
    assert describe_entry(4, guard_entry("", ["a", "b"], None)) == ParkedEntry(4, None, None, None)
    assert describe_entry(4, guard_entry("", [], PARKED_AT)).parked_at == PARKED_AT


def test_an_unreadable_entry_is_shown_without_details_never_an_error() -> None:
    for raw in (b"\xc1", b"\xa5ab", b"{not json", b"\xd9"):
        assert describe_entry(5, raw) == ParkedEntry(5, None, None, None)


def test_unpack_reads_what_lua_cmsgpack_writes() -> None:
    packed = bytes([0x93, 0x01, 0xC0, 0xC3]) + bytes([0xCD, 0x01, 0x00]) + bytes([0xFF]) + bytes([0x80])
    assert unpack_sequence(packed) == [[1, None, True], 256, -1, {}]
    with pytest.raises(ValueError):
        unpack_sequence(bytes([0x92, 0x01]))  # an array cut short


def test_the_gap_is_the_versions_between_the_read_model_and_the_lowest_parked() -> None:
    entries = (ParkedEntry(5, None, None, None), ParkedEntry(7, None, None, None))
    assert ParkedAggregate("campaign", "c", 2, 2, entries).missing == (3, 4)
    assert ParkedAggregate("campaign", "c", None, 2, entries).missing == (1, 2, 3, 4)
    assert ParkedAggregate("campaign", "c", 2, 0, ()).missing == ()


def test_a_cursor_is_a_bucket_and_a_scan_position_of_this_deployment() -> None:
    assert parse_cursor(None, 8) == (0, 0)
    assert parse_cursor("3.1024", 8) == (3, 1024)
    for bad in ("8.0", "x.1", "3", "-1.0", "1.2.3"):
        with pytest.raises(InvalidCursor):
            parse_cursor(bad, 8)
