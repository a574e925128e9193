"""Card and suggestion uuids: version 7 (time first, then random), never repeated, not even
across forked workers."""

import json
import os
import time
import uuid

from cds_service.guidance import cards
from cds_service.guidance.cards import Card, Source, Suggestion, new_uuid, response_json


def _random_bits(value: str) -> int:
    """The 74 random bits of a version 7 uuid: rand_a (bits 75-64) and rand_b (61-0)."""
    number = uuid.UUID(value).int
    return (number >> 64 & 0xFFF) << 62 | number & (1 << 62) - 1


def test_uuids_are_version_7_and_distinct_across_batches():
    values = [new_uuid() for _ in range(3 * cards.UUID_BATCH + 7)]
    assert len(set(values)) == len(values)
    for value in values:
        parsed = uuid.UUID(value)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and str(parsed) == value


def test_a_uuid_begins_with_the_millisecond_it_was_made():
    before = time.time_ns() // 1_000_000
    made = uuid.UUID(new_uuid())
    after = time.time_ns() // 1_000_000
    assert before <= made.int >> 80 <= after


def test_uuids_made_later_sort_after_earlier_ones(monkeypatch):
    """What keeps the served-card and feedback indexes appending at their end."""
    now = [1_795_000_000_000_000_000]
    monkeypatch.setattr(cards.time, "time_ns", lambda: now[0])
    earlier = [new_uuid() for _ in range(50)]
    now[0] += 1_000_000  # one millisecond on
    later = [new_uuid() for _ in range(50)]
    assert max(earlier) < min(later)
    assert max(uuid.UUID(u) for u in earlier) < min(uuid.UUID(u) for u in later)


def test_a_forked_worker_does_not_reuse_the_parents_batch():
    cards._uuid_bytes.clear()
    new_uuid()  # the parent now holds a fresh, partly used batch
    assert cards._uuid_bytes
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next uuid and leave at once
        os.close(read_end)
        os.write(write_end, new_uuid().encode())
        os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    # The random bits only: the time alone would tell two uuids apart a millisecond later.
    assert _random_bits(child) != _random_bits(new_uuid())


def test_serialising_cards_draws_no_uuids():
    card = Card(
        summary="s",
        indicator="info",
        source=Source(label="guidance"),
        suggestions=(Suggestion(label="a"), Suggestion(label="b")),
        selectionBehavior="any",
    )
    new_uuid()  # a batch is in the pool
    left = len(cards._uuid_bytes)
    body = json.loads(response_json([card]))
    assert len(cards._uuid_bytes) == left
    assert body["cards"][0]["uuid"] == card.uuid
    assert [s["uuid"] for s in body["cards"][0]["suggestions"]] == [
        s.uuid for s in card.suggestions
    ]
    assert len({card.uuid, *(s.uuid for s in card.suggestions)}) == 3


def test_every_bit_but_time_version_and_variant_comes_from_the_os(monkeypatch):
    """All-zero and all-one randomness give the lowest and highest uuid of their millisecond:
    the 74 random bits are the OS's, and nothing else changes them."""
    monkeypatch.setattr(cards.time, "time_ns", lambda: 1_795_704_858_315_123_456)
    for fill, expected in (
        (0x00, "01a21859-a6cb-7000-8000-000000000000"),
        (0xFF, "01a21859-a6cb-7fff-bfff-ffffffffffff"),
    ):
        monkeypatch.setattr(cards.os, "urandom", lambda n, fill=fill: bytes([fill]) * n)
        cards._uuid_bytes.clear()
        assert {new_uuid() for _ in range(cards.UUID_BATCH)} == {expected}
    cards._uuid_bytes.clear()


def test_each_uuids_random_bits_are_its_own_ten_bytes_from_the_os(monkeypatch):
    """Distinct bytes in every position: each uuid carries the 74 bits of its own 10 bytes that
    the version and variant leave (none dropped, repeated or taken from another uuid's)."""
    size = cards.RANDOM_BYTES
    # An odd multiplier modulo 2**80: every chunk differs, in every byte position.
    chunks = [
        ((i * 0x0123456789ABCDEF0123 + 0x1F2E3D4C5B6A79881726) % (1 << 80)).to_bytes(size)
        for i in range(cards.UUID_BATCH)
    ]
    batch = b"".join(chunks)
    monkeypatch.setattr(cards.os, "urandom", lambda n: batch[:n])
    cards._uuid_bytes.clear()
    made = [new_uuid() for _ in range(cards.UUID_BATCH)]
    served = [chunks[0], *reversed(chunks[1:])]  # the first at once, then popped from the end
    for value, chunk in zip(made, served, strict=True):
        bits = int.from_bytes(chunk)
        assert _random_bits(value) == (bits >> 64 & 0xFFF) << 62 | bits & (1 << 62) - 1
    assert len({_random_bits(value) for value in made}) == len(made)
    cards._uuid_bytes.clear()
