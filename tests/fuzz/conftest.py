"""Fuzz session report: how many generated requests were sent and how they were answered."""

from __future__ import annotations

import json


def pytest_terminal_summary(terminalreporter) -> None:
    from tests.fuzz.fuzz_app import REPORT, TALLY

    if TALLY.total == 0:
        return
    summary = TALLY.summary()
    terminalreporter.write_line(f"fuzz: {json.dumps(summary)}")
    if REPORT:
        with open(REPORT, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
