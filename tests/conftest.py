"""Shared test fixtures: an app per test with its own database, auth off unless a test asks."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cds_service import create_app
from cds_service.logs import JsonFormatter
from cds_service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        auth="off",
        database_url=f"sqlite:///{tmp_path / 'cds.sqlite3'}",
        fhir_server_allowlist=("https://fhir.example.org/r4",),
    )


@pytest.fixture
def app(settings: Settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_request() -> Callable[..., dict[str, Any]]:
    """A minimal valid hook request; keyword arguments replace top-level members."""

    def build(hook: str = "patient-view", **members: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "hook": hook,
            "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/1", "patientId": "p1"},
            "prefetch": {
                key: None
                for key in (
                    "patient",
                    "conditions",
                    "observations",
                    "medications",
                    "servicerequests",
                    "diagnosticreports",
                    "procedures",
                )
            },
        }
        if hook != "patient-view":
            body["context"]["draftOrders"] = {"resourceType": "Bundle", "entry": []}
        if hook == "order-select":
            body["context"]["selections"] = ["MedicationRequest/none"]
        body.update(members)
        return body

    return build


@pytest.fixture
def log_lines():
    """The service's JSON log lines during the test: ``log_lines()`` parsed, ``.text()`` raw."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("cds_service")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    lines.text = stream.getvalue  # type: ignore[attr-defined]
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)
