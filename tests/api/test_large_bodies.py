"""Large bodies are handled one at a time per process; small ones are never held up."""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import replace

import pytest

from cds_service import create_app
from cds_service.api.large_bodies import LARGE_BODY_BYTES
from cds_service.devtools.scenarios import load_scenario

SCENARIO = "pv-many-findings"


@pytest.fixture
def app(settings):
    return create_app(replace(settings, max_body_bytes=4 * LARGE_BODY_BYTES))


def _overlap(app, padding: int) -> tuple[int, list[int], list[set[str]]]:
    """Post the scenario twice at once (padded by ``padding`` bytes); the most pipeline runs
    seen in flight together, the statuses, and the rule ids answered."""
    scenario = load_scenario(SCENARIO)
    body = scenario.hook_request(dict(scenario.service.prefetch))
    body["extension"] = {"org.example.padding": "x" * padding}  # an object, as the standard has it
    raw = json.dumps(body).encode()
    pipeline = app.extensions["cds"].pipeline
    original = pipeline.run
    active, most = 0, 0
    lock = threading.Lock()
    # Each run waits (up to 2 s) for the other to arrive, so two calls that can overlap always
    # do, whatever the machine's load; one held back by the gate never arrives in time, and the
    # broken barrier lets both go on.
    meet = threading.Barrier(2)

    def slow_run(*args, **kwargs):
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        try:
            with contextlib.suppress(threading.BrokenBarrierError):
                meet.wait(timeout=2)
            return original(*args, **kwargs)
        finally:
            with lock:
                active -= 1

    pipeline.run = slow_run
    answers: list = [None, None]

    def post(i: int) -> None:
        answers[i] = app.test_client().post(
            f"/cds-services/{scenario.service.id}", data=raw, content_type="application/json"
        )

    threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    statuses = [a.status_code for a in answers]
    rules = [{c["source"]["topic"]["code"] for c in a.get_json()["cards"]} for a in answers]
    return most, statuses, rules


def test_two_large_bodies_do_not_overlap(app):
    most, statuses, rules = _overlap(app, LARGE_BODY_BYTES + 1)
    assert statuses == [200, 200]
    expected = set(load_scenario(SCENARIO).expected_cards)
    assert rules == [expected, expected]
    assert most == 1


def test_small_bodies_run_side_by_side(app):
    most, statuses, _ = _overlap(app, 0)
    assert statuses == [200, 200]
    assert most == 2


def test_the_gate_is_released_after_a_refused_large_body(app):
    """A large body that fails (here: not JSON) must not keep the gate closed."""
    client = app.test_client()
    junk = b"[" + b" " * (LARGE_BODY_BYTES + 1)
    for _ in range(2):
        assert client.post(
            "/cds-services/hypermobility-pain-patient-view",
            data=junk,
            content_type="application/json",
        ).status_code == 400
    most, statuses, _ = _overlap(app, LARGE_BODY_BYTES + 1)
    assert statuses == [200, 200] and most == 1


def test_a_body_over_the_cap_never_waits(app):
    """It is refused (413) without being read, so it must not queue behind a large call."""
    from cds_service.api import large_bodies

    cap = app.extensions["cds"].settings.max_body_bytes + 1
    answers: list = []
    assert large_bodies._one_at_a_time.acquire(timeout=5)  # a large call is in flight
    try:
        thread = threading.Thread(
            target=lambda: answers.append(
                app.test_client().post(
                    "/cds-services/hypermobility-pain-patient-view",
                    data=b" " * (cap + 1),
                    content_type="application/json",
                )
            )
        )
        thread.start()
        thread.join(timeout=10)
        assert [a.status_code for a in answers] == [413]
    finally:
        large_bodies._one_at_a_time.release()
        thread.join(timeout=10)


def test_the_gate_works_without_a_body_cap(app):
    """An app with no MAX_CONTENT_LENGTH still gates large bodies (and never fails on it)."""
    app.config["MAX_CONTENT_LENGTH"] = None
    most, statuses, _ = _overlap(app, LARGE_BODY_BYTES + 1)
    assert statuses == [200, 200] and most == 1
