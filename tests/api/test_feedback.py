"""Feedback: validated, stored idempotently in SQLite, and kept across restarts."""

import pytest

from cds_service import create_app

FB = "/cds-services/hypermobility-pain-patient-view/feedback"
TS = "2026-11-20T10:00:00Z"


def accepted(card="c-1", suggestion="s-1", ts="2026-11-20T10:05:31Z"):
    return {"card": card, "outcome": "accepted", "acceptedSuggestions": [{"id": suggestion}],
            "outcomeTimestamp": ts}


def overridden(card="c-2"):
    return {
        "card": card,
        "outcome": "overridden",
        "overrideReason": {
            "reason": {"system": "urn:hypermobility-cds:codes", "code": "palliative-intent",
                       "display": "Palliative intent"},
            "userComment": "hospice referral pending",
        },
        "outcomeTimestamp": "2026-11-20T10:06:00Z",
    }


def test_stores_entries(client, app):
    response = client.post(FB, json={"feedback": [accepted(), overridden()]})
    assert response.status_code == 200
    assert response.get_json() == {}
    rows = app.extensions["cds"].store.feedback_rows()
    assert [(r["card_uuid"], r["outcome"]) for r in rows] == [
        ("c-1", "accepted"), ("c-2", "overridden")]
    assert rows[1]["override_code"] == "palliative-intent"
    assert rows[0]["service_id"] == "hypermobility-pain-patient-view"


def test_same_feedback_twice_is_counted_once(client, app):
    for _ in range(3):
        assert client.post(FB, json={"feedback": [accepted()]}).status_code == 200
    assert app.extensions["cds"].store.count_feedback() == 1


def test_survives_restart(client, settings):
    client.post(FB, json={"feedback": [accepted(), overridden()]})
    restarted = create_app(settings)
    assert restarted.extensions["cds"].store.count_feedback() == 2


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"feedback": []},
        {"feedback": [{"card": "c", "outcome": "maybe", "outcomeTimestamp": TS}]},
        {"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": TS}]},
        {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"}]},
        {"feedback": [{"card": "c", "outcome": "overridden", "overrideReason": {},
                       "outcomeTimestamp": "2026-11-20T10:00:00Z"}]},
        {"feedback": [{"outcome": "overridden", "outcomeTimestamp": "2026-11-20T10:00:00Z"}]},
        # The right shape, but no such instant (one stored broke the feedback report).
        {"feedback": [{"card": "c", "outcome": "overridden",
                       "outcomeTimestamp": "2021-02-30T10:05:31Z"}]},
        {"feedback": [{"card": "c", "outcome": "overridden",
                       "outcomeTimestamp": "2021-13-45T25:61:61Z"}]},
        {"feedback": [{"card": "c", "outcome": "overridden",
                       "outcomeTimestamp": "2021-12-11T10:05:31+25:00"}]},
        # U+0000 cannot be stored in PostgreSQL text: refused, not a 503 "retry later".
        {"feedback": [{"card": "c\u0000", "outcome": "overridden", "outcomeTimestamp": TS}]},
        {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": TS,
                       "overrideReason": {"userComment": "a\u0000b"}}]},
        {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": TS,
                       "overrideReason": {"reason": {"system": "s", "code": "x\u0000"}}}]},
    ],
)
def test_invalid_feedback_is_400(client, app, body):
    response = client.post(FB, json=body)
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert app.extensions["cds"].store.count_feedback() == 0


def test_feedback_for_unknown_service_is_404(client):
    response = client.post("/cds-services/nope/feedback", json={"feedback": [accepted()]})
    assert response.status_code == 404


def test_store_failure_is_503_retry_later(client, app, monkeypatch):
    from sqlalchemy.exc import OperationalError

    def broken(*args, **kwargs):
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(app.extensions["cds"].store, "add_feedback", broken)
    response = client.post(FB, json={"feedback": [accepted()]})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "transient"


def test_a_feedback_body_is_small_whatever_the_hook_body_cap(client, app):
    """Feedback is a few hundred bytes a card; with the hook calls' 32 MiB cap, a security
    review stored a 30 MiB comment, and a 32 MiB array of empty objects cost the worker about
    1 GB while it was read."""
    from cds_service.api.hooks import FEEDBACK_MAX_BYTES

    comment = "A" * FEEDBACK_MAX_BYTES
    body = {"feedback": [{"card": "c1", "outcome": "overridden",
                          "outcomeTimestamp": "2026-01-01T00:00:00Z",
                          "overrideReason": {"userComment": comment}}]}
    response = client.post(FB, json=body)
    assert response.status_code == 413
    assert f"{FEEDBACK_MAX_BYTES} bytes" in response.get_json()["issue"][0]["diagnostics"]
    assert app.extensions["cds"].store.feedback_rows() == []
    body["feedback"][0]["overrideReason"]["userComment"] = "A" * 4000
    assert client.post(FB, json=body).status_code == 200


def test_a_chunked_feedback_body_is_not_read_past_its_cap(client):
    """The cap was checked only once the body was read, and a chunked one is read up to the
    hook calls' 32 MiB: a review read 4 MiB of a feedback POST before its 413."""
    import io

    from cds_service.api.hooks import FEEDBACK_MAX_BYTES

    class Counted(io.RawIOBase):
        def __init__(self, raw: bytes) -> None:
            self.data, self.taken = io.BytesIO(raw), 0

        def readable(self) -> bool:
            return True

        def tell(self) -> int:
            return self.data.tell()

        def seek(self, *args: int) -> int:
            return self.data.seek(*args)

        def readinto(self, buffer) -> int:  # noqa: ANN001
            piece = self.data.read(len(buffer))
            buffer[: len(piece)] = piece
            self.taken += len(piece)
            return len(piece)

    stream = Counted(b'{"feedback": [], "x": "' + b"a" * (4 * 1024 * 1024) + b'"}')
    response = client.post(FB, input_stream=stream, content_type="application/json",
                           headers={"Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413
    assert stream.taken <= FEEDBACK_MAX_BYTES + 64 * 1024, stream.taken
