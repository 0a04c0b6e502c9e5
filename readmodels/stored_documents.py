"""How a campaign document is kept in its Redis hash (`doc`): compressed from key layout 4.

A document is ~540 B of JSON, and in Redis its hash cost ~760 B: the largest share of a
campaign's bytes (bench/NOTES.md, "Redis bytes per campaign"). From layout 4
(`COMPRESSED_LAYOUT`) the projection stores it as a format byte and a Zstandard frame
compressed against a preset dictionary of the document's own shape (its field names in order,
the channel and status values, the time stamps' fixed characters): ~230 B for a document of
~560 B with random ids and free text, at ~5 µs a write and ~2 µs a read.

The stored form says what it is, so a reader needs no layout: JSON starts with `{`, a format
byte names its dictionary. A format's dictionary is frozen with it: every stored document of
that format needs those very bytes to be read, so a new field or value gets a new format byte
and dictionary beside this one (and this one stays readable), never an edit of `_DICTIONARY_1`.
"""

from __future__ import annotations

import threading

import zstandard

# The key layout (readmodels.generations.LAYOUT_VERSIONS) from which campaign documents are
# stored compressed; before it, as their JSON.
COMPRESSED_LAYOUT = 4

_FORMAT_1 = b"\x01"
# Format 1's preset dictionary: what every document repeats, the most frequent last (the
# nearest matches are the cheapest). Frozen: see the module's docstring.
_DICTIONARY_1 = (
    b'"channel":"social","channel":"push","channel":"sms","channel":"email",'
    b'"status":"deleted","status":"completed","status":"paused","status":"draft","status":"scheduled",'
    b'{"id":"","owner_id":"","name":"","description":"","channel":"",'
    b'"budget":{"amount":".00","currency":"EUR"},"starts_at":"T00:00:00Z","ends_at":"T00:00:00Z",'
    b'"tags":[""],"status":"active","next_transition":{"to":"completed","at":"T00:00:00Z"},'
    b'"version":1,"created_at":"2026-T:.000Z","updated_at":"2026-T:.000Z"}'
)
# Zstandard's default level: 5 µs a document here, 1 B larger at level 1, 3 B smaller at 6 for
# 9 µs.
_LEVEL = 3

_dictionary = zstandard.ZstdCompressionDict(_DICTIONARY_1, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
_dictionary.precompute_compress(level=_LEVEL)


class _Codecs(threading.local):
    """One compressor and one decompressor per thread.

    python-zstandard's objects keep their working state between calls and release the GIL while
    they work, so two threads sharing one corrupt each other's frames. The services call these
    on their event loop's thread only, but nothing stops a process from also calling them from
    another (the replay CLI run through `asyncio.to_thread` beside in-process projectors did, in
    a test, and failed with "Destination buffer is too small"). Finding this thread's pair costs
    ~0.03 µs a call against ~4 µs to compress a document.
    """

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(
            level=_LEVEL, dict_data=_dictionary, write_checksum=False, write_dict_id=False
        )
        self.decompressor = zstandard.ZstdDecompressor(dict_data=_dictionary)


_codecs = _Codecs()


class UnreadableDocument(ValueError):
    """A stored document in no form this code knows (a later format, or not a document)."""


def stored_form(document: bytes) -> bytes:
    """The document's JSON as layout 4 stores it."""
    return _FORMAT_1 + _codecs.compressor.compress(document)


def document_json(stored: bytes) -> bytes:
    """The document's JSON from its stored form, whichever layout wrote it."""
    head = stored[:1]
    if head == b"{":
        return stored
    if head == _FORMAT_1:
        try:
            return _codecs.decompressor.decompress(stored[1:])
        except zstandard.ZstdError as exc:
            raise UnreadableDocument(f"a campaign document of format 1 did not decompress: {exc}") from exc
    raise UnreadableDocument(f"a campaign document of unknown format {head!r}")
