"""Feedback analytics: acceptance and overrides per rule and service, shown-without-feedback."""

from datetime import UTC, datetime

from cds_service.analytics import build_report

SERVED = [
    {"card_uuid": "a", "service_id": "pv", "rule_id": "rehab-referral", "hook": "patient-view",
     "served_at": "2026-11-10T10:00:00+00:00"},
    {"card_uuid": "b", "service_id": "pv", "rule_id": "rehab-referral", "hook": "patient-view",
     "served_at": "2026-11-11T10:00:00+00:00"},
    {"card_uuid": "c", "service_id": "sign", "rule_id": "opioid-order", "hook": "order-sign",
     "served_at": "2026-11-12T10:00:00+00:00"},
    {"card_uuid": "d", "service_id": "sign", "rule_id": "opioid-order", "hook": "order-sign",
     "served_at": "2026-10-01T10:00:00+00:00"},
]


def fb(card, outcome, ts, reason=None, service="pv"):
    return {"card_uuid": card, "service_id": service, "outcome": outcome,
            "outcome_timestamp": ts, "override_code": reason, "override_display": reason}


FEEDBACK = [
    fb("a", "overridden", "2026-11-10T10:01:00Z", "Palliative intent"),
    fb("a", "accepted", "2026-11-10T10:02:00Z"),  # the latest outcome wins
    fb("c", "overridden", "2026-11-12T10:01:00Z", "Palliative intent", service="sign"),
    fb("zz", "accepted", "2026-11-12T11:00:00Z", service="sign"),  # never served by us
]


def test_counts_per_rule_and_service():
    report = build_report(SERVED, FEEDBACK)
    rehab = report.by_rule["rehab-referral"]
    assert (rehab.shown, rehab.accepted, rehab.overridden, rehab.no_feedback) == (2, 1, 0, 1)
    assert rehab.acceptance_rate == 1.0
    opioid = report.by_rule["opioid-order"]
    assert (opioid.shown, opioid.accepted, opioid.overridden, opioid.no_feedback) == (2, 0, 1, 1)
    assert opioid.override_reasons == {"Palliative intent": 1}
    assert opioid.acceptance_rate == 0.0
    assert report.by_rule["unknown"].accepted == 1
    assert report.by_service["sign"].shown == 2 and report.by_service["sign"].accepted == 1


def test_time_window():
    report = build_report(SERVED, FEEDBACK, since=datetime(2026, 11, 1, tzinfo=UTC),
                          until=datetime(2026, 11, 12, tzinfo=UTC))
    assert report.by_rule["rehab-referral"].shown == 2
    assert "opioid-order" not in report.by_rule


def test_table_and_json():
    report = build_report(SERVED, FEEDBACK)
    table = report.to_table()
    assert "rehab-referral" in table and "override: Palliative intent (1)" in table
    data = report.to_json()
    assert data["by_rule"]["opioid-order"]["override_reasons"] == {"Palliative intent": 1}
    assert data["by_rule"]["rehab-referral"]["acceptance_rate"] == 1.0


def test_no_data():
    report = build_report([], [])
    assert report.by_rule == {} and report.to_json()["by_service"] == {}


def test_latest_outcome_is_the_latest_instant_not_the_last_string():
    # As text, "10:02:00+02:00" sorts after "09:00:00Z" and "10:01:00Z" after "10:01:00.5Z";
    # as instants, both orders are the other way round.
    offsets = [fb("a", "accepted", "2026-11-10T09:00:00Z"),
               fb("a", "overridden", "2026-11-10T10:02:00+02:00", "Palliative intent")]
    fractions = [fb("b", "accepted", "2026-11-11T10:01:00.5Z"),
                 fb("b", "overridden", "2026-11-11T10:01:00Z", "Palliative intent")]
    for entries in (offsets, offsets[::-1], fractions, fractions[::-1]):
        rehab = build_report(SERVED, entries).by_rule["rehab-referral"]
        assert (rehab.accepted, rehab.overridden) == (1, 0), entries


def test_feedback_with_an_unreadable_time_is_counted_apart_not_fatal():
    """Entries stored before the API refused impossible times (30 February) must not stop the
    report; they are left out of the tallies and counted."""
    entries = [*FEEDBACK, fb("b", "accepted", "2021-02-30T10:05:31Z")]
    report = build_report(SERVED, entries)
    assert report.unreadable_feedback == 1
    assert report.by_rule["rehab-referral"].no_feedback == 1  # "b" still counts as unanswered
    assert report.to_json()["unreadable_feedback"] == 1
    assert "1 feedback entry (of any date: the date cannot be read) left out: its " \
        "outcomeTimestamp is not a date and time" in report.to_table()
    assert build_report(SERVED, FEEDBACK).unreadable_feedback == 0
    assert "left out" not in build_report(SERVED, FEEDBACK).to_table()


def test_control_characters_in_an_override_reason_are_shown_escaped_in_the_table():
    """The reason comes from an EHR and the table is read in a terminal: ESC and BEL sequences
    (erase a line, write the clipboard) and bidi overrides are written as escapes."""
    hostile = "ok\x1b[2K\r\x1b]52;c;ZXZpbA==\x07 \u202egnp.exe"
    report = build_report(SERVED, [fb("c", "overridden", "2026-11-12T10:01:00Z", hostile,
                                      service="sign")])
    table = report.to_table()
    assert "\x1b" not in table and "\x07" not in table and "\u202e" not in table
    assert "\\x1b[2K\\r\\x1b]52;c;ZXZpbA==\\x07 \\u202egnp.exe" in table
    assert report.to_json()["by_rule"]["opioid-order"]["override_reasons"] == {hostile: 1}
