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


def test_the_app_itself_keeps_request_text_out_of_gunicorns_refusal_lines(settings, monkeypatch):
    """The filter was installed only by `hypermobility-cds serve`: under gunicorn started any
    other way, a refused header line such as 'Authorization Bearer <token>' was logged whole
    (review). create_app installs it, as it keeps the URL loggers quiet."""
    import logging

    from cds_service import create_app
    from cds_service.logs import WithholdRequestText

    error_log = logging.getLogger("gunicorn.error")
    monkeypatch.setattr(error_log, "filters", [])
    create_app(settings)
    assert [type(f) for f in error_log.filters] == [WithholdRequestText]
