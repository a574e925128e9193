"""Card and suggestion uuids: random version 4, never repeated, not even across forked workers."""

import json
import os
import uuid

from cds_service.guidance import cards
from cds_service.guidance.cards import Card, Source, Suggestion, new_uuid, response_json


def test_uuids_are_version_4_and_distinct_across_batches():
    values = [new_uuid() for _ in range(3 * cards.UUID_BATCH + 7)]
    assert len(set(values)) == len(values)
    for value in values:
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and str(parsed) == value


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
    assert child != new_uuid()


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


def test_each_uuid_is_what_the_uuid_module_makes_of_the_same_bytes(monkeypatch):
    batch = bytes(range(256)) * (cards.UUID_BATCH // 16)  # every byte value, in every position
    monkeypatch.setattr(cards.os, "urandom", lambda n: batch[:n])
    cards._uuid_bytes.clear()
    made = [new_uuid() for _ in range(cards.UUID_BATCH)]
    raws = [batch[i : i + 16] for i in range(0, 16 * cards.UUID_BATCH, 16)]
    expected = [str(uuid.UUID(bytes=raws[0], version=4))]
    expected += [str(uuid.UUID(bytes=raw, version=4)) for raw in reversed(raws[1:])]
    assert made == expected
    cards._uuid_bytes.clear()
