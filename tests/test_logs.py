"""The JSON log formatter: one parseable line per record, whatever the record holds."""

import json
import logging

from cds_service.logs import JsonFormatter


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("cds_service.api", logging.INFO, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_allowed_fields_are_written_and_others_are_not():
    line = json.loads(JsonFormatter().format(_record("hook answered", cards=3, patient="p1")))
    assert line["message"] == "hook answered"
    assert line["level"] == "info" and line["logger"] == "cds_service.api"
    assert line["cards"] == 3
    assert "patient" not in line


def test_text_orjson_refuses_is_still_written_as_one_json_line():
    # A lone surrogate (from a decoded path, say) and an integer beyond 64 bits: orjson
    # refuses both, and the line must not be lost.
    text = JsonFormatter().format(_record("odd \ud800 text", resources=2**70))
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "odd \ud800 text" and line["resources"] == 2**70
