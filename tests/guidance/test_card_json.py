"""Card JSON carries no null or empty value anywhere (CDS Hooks 2.0 forbids them)."""

import json

import pytest
from pydantic import ValidationError

from cds_service.guidance.cards import Action, Card, Link, Source, Suggestion, prune, response_json


def test_prune_drops_nulls_and_empties_at_every_depth_and_keeps_false_and_zero():
    value = {
        "a": None,
        "b": "",
        "c": [],
        "d": {},
        "e": {"f": {"g": None, "h": [None, "", {}, []]}},  # empty once pruned: dropped too
        "i": [0, False, "x", ("y", None)],
        "j": 0,
        "k": False,
    }
    assert prune(value) == {"i": [0, False, "x", ["y"]], "j": 0, "k": False}


def test_card_json_has_no_empty_members():
    card = Card(
        summary="s",
        indicator="info",
        source=Source(label="guidance"),
        suggestions=(
            Suggestion(
                label="order it",
                actions=(
                    Action(
                        type="create",
                        description="create",
                        resource={"resourceType": "ServiceRequest", "note": [], "code": None},
                    ),
                ),
            ),
        ),
        selectionBehavior="at-most-one",
    )
    body = card.to_json()
    assert body["suggestions"][0]["actions"][0]["resource"] == {"resourceType": "ServiceRequest"}
    assert "detail" not in body and "links" not in body and "overrideReasons" not in body
    assert body["source"] == {"label": "guidance"}
    assert json.loads(response_json((card, card))) == {"cards": [body, body]}
    assert json.loads(response_json([])) == {"cards": []}


@pytest.mark.parametrize("field", ["detail", "url", "appContext", "resourceId"])
def test_optional_strings_are_absent_or_not_empty(field):
    source = Source(label="guidance")
    with pytest.raises(ValidationError):
        if field == "detail":
            Card(summary="s", indicator="info", source=source, detail="")
        elif field == "url":
            Source(label="guidance", url="")
        elif field == "appContext":
            Link(label="l", url="https://example.org", type="smart", appContext="")
        else:
            Action(type="delete", description="d", resourceId="")


def test_a_link_states_its_type():
    with pytest.raises(ValidationError):
        Link(label="l", url="https://example.org")
