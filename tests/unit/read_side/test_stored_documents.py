"""Campaign documents as the projection stores them (readmodels/stored_documents.py): compressed
from key layout 4, JSON before it, and every form a reader meets read back to the same JSON."""

from __future__ import annotations

import hashlib
import threading
import uuid

import orjson
import pytest

from projectors.adapters.campaigns_projection import _KeyTable, _writes
from projectors.adapters.digest import _canonical
from projectors.domain.campaign_plan import StoredCampaign, plan_campaign
from readmodels.campaigns import PACKED_LAYOUT, campaign_document, fold_campaign
from readmodels.keyspace import CampaignKeys
from readmodels.stored_documents import (
    _DICTIONARY_1,
    COMPRESSED_LAYOUT,
    UnreadableDocument,
    document_json,
    stored_form,
)
from tests.integration.read_side.workload import new_campaign

# A document stored in format 1 when the format was made: it must stay readable for as long as
# a read model may hold it, whatever the library's version or this code's dictionary.
DOCUMENT = (
    b'{"id":"4bc55cb9-9a08-48ff-96f7-a8e077685281","owner_id":"38ef2e7c-c05b-4afc-9725-44653e9dcaf8",'
    b'"name":"Spring sale","description":"Twenty per cent off the spring range.","channel":"email",'
    b'"budget":{"amount":"1500.00","currency":"EUR"},"starts_at":"2027-03-01T00:00:00Z",'
    b'"ends_at":"2027-03-31T00:00:00Z","tags":["spring","sale"],"status":"scheduled",'
    b'"next_transition":{"to":"active","at":"2027-03-01T00:00:00Z"},"version":2,'
    b'"created_at":"2026-12-04T20:31:07.412Z","updated_at":"2026-12-04T20:31:09.008Z"}'
)
STORED_IN_FORMAT_1 = bytes.fromhex(
    "0128b52ffd60f7003d0600f2891f1c70356e80be5eedf713e0a760d775b0aabba6d0a79008b5bd7dfa9f2101c5a0"
    "330da6698d954852486ab2899ab408142a25aac4a5a9999c0c5f5e6b1ce48507fd23d0f3dca1c61904f03c4f247e"
    "680e5a9ea16104fdcd11982b3e7691753174df16154e876eb9beb74aaddcc75ae9dd70fdc1f0bf173b1b43a63866"
    "a76c19004b0fc07d290168115f0e1ee6217609f06f01db6bc12431007b1958ad0dc8302c2f02803ca26f08de1abd"
    "5d9266570229820073c4295d1d46e2ce49bf8509b556928dbbac"
)


def test_a_document_stored_in_format_1_reads_back_byte_for_byte() -> None:
    assert document_json(STORED_IN_FORMAT_1) == DOCUMENT


def test_format_1s_dictionary_is_frozen() -> None:
    # Every document of format 1 needs these very bytes: a new dictionary is a new format.
    assert hashlib.sha256(_DICTIONARY_1).hexdigest() == (
        "cb51ee7467f2447591a15788632e108e06e950ac91202cae7d6e9c2f26089cf2"
    )


def test_a_document_round_trips_in_well_under_half_its_size() -> None:
    campaign = new_campaign(str(uuid.uuid4()), tags=["spring", "sale"])
    document = campaign_document(fold_campaign(campaign.events) or {})
    stored = stored_form(document)
    assert document_json(stored) == document
    assert len(stored) < 0.5 * len(document), (len(stored), len(document))


def test_threads_compressing_and_reading_at_once_each_get_their_own_documents_back() -> None:
    # The replay CLI run through asyncio.to_thread beside in-process projectors did this in a
    # test: with one shared compressor, frames came back corrupt ("Src size is incorrect",
    # "Destination buffer is too small").
    documents = [
        campaign_document(fold_campaign(new_campaign(str(uuid.uuid4()), description="d" * size).events) or {})
        for size in range(0, 2_000, 40)
    ]
    failures: list[str] = []

    def round_trips() -> None:
        try:
            for _ in range(40):
                for document in documents:
                    if document_json(stored_form(document)) != document:
                        failures.append("a document came back changed")
                        return
        except Exception as exc:  # the failure is the finding, whatever it raised
            failures.append(repr(exc))

    threads = [threading.Thread(target=round_trips) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_json_written_before_layout_4_is_read_as_it_is() -> None:
    assert document_json(DOCUMENT) is DOCUMENT


@pytest.mark.parametrize(
    "stored",
    [b"\x02" + STORED_IN_FORMAT_1[1:], STORED_IN_FORMAT_1[:40], b"", b"not a document"],
    ids=["a later format", "cut short", "empty", "text"],
)
def test_a_form_this_code_does_not_know_is_refused_not_misread(stored: bytes) -> None:
    with pytest.raises(UnreadableDocument):
        document_json(stored)


def _stored_document(layout: int) -> bytes:
    owner = str(uuid.uuid4())
    campaign = new_campaign(owner)
    plan = plan_campaign(StoredCampaign(), campaign.events)
    keys = CampaignKeys("test:campaigns.1")
    writes = _writes(keys, _KeyTable(keys), campaign.aggregate_id, plan, 0, "now", layout)
    document = writes[writes.index("doc") + 1]
    assert isinstance(document, bytes)
    assert orjson.loads(document_json(document))["id"] == campaign.aggregate_id
    return document


def test_the_projection_compresses_documents_only_in_a_generation_of_layout_4_or_later() -> None:
    assert _stored_document(COMPRESSED_LAYOUT - 1).startswith(b"{")
    assert _stored_document(PACKED_LAYOUT).startswith(b"{")
    assert not _stored_document(COMPRESSED_LAYOUT).startswith(b"{")


def test_verify_compares_documents_as_their_json_whichever_form_holds_them() -> None:
    compressed = _canonical(b"hash", {b"doc": stored_form(DOCUMENT), b"v": b"2"})
    assert compressed == _canonical(b"hash", {b"doc": DOCUMENT, b"v": b"2"})
    assert compressed != _canonical(b"hash", {b"doc": DOCUMENT.replace(b"Spring", b"Autumn"), b"v": b"2"})
