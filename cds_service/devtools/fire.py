"""``hypermobility-cds fire``: act as a CDS client (an EHR) from the terminal.

It reads the service's discovery document, builds the hook request from a fixture scenario (or a
FHIR Bundle file), renders the prefetch templates against the patient's resources, or leaves
prefetch out and serves the patient from a local FHIR endpoint instead, signs every call with the
local development key (as an EHR signs its calls), and prints the cards readably.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

import requests

from cds_service.devtools import memory_fhir
from cds_service.devtools.devkeys import dev_token
from cds_service.devtools.scenarios import Scenario, load_bundle_file, load_scenario

COLOURS = {"info": "\033[34m", "warning": "\033[33m", "critical": "\033[31m"}
BOLD, DIM, RESET = "\033[1m", "\033[2m", "\033[0m"


class FireError(RuntimeError):
    """Something the developer must fix (service down, no such service, bad scenario)."""


@dataclass
class Exchange:
    status: int
    body: Any
    request: dict[str, Any]


def _call(session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
    """Call the service as an EHR would: every call signed, here with the development key (a
    service with authentication off ignores it; one in production refuses it with 401)."""
    headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {dev_token(url)}"}
    try:
        response = session.request(method, url, timeout=30, headers=headers, **kwargs)
    except requests.RequestException as exc:
        raise FireError(f"cannot reach the service at {url}: {type(exc).__name__}") from None
    return response


def discover(session: requests.Session, base_url: str, hook: str) -> dict[str, Any]:
    response = _call(session, "GET", f"{base_url}/cds-services")
    if response.status_code != 200:
        raise FireError(f"discovery answered HTTP {response.status_code}")
    for service in response.json().get("services", []):
        if service.get("hook") == hook:
            return service
    raise FireError(f"the service offers nothing for the {hook!r} hook")


@contextmanager
def _local_fhir(resources: list[dict], enabled: bool) -> Iterator[str | None]:
    if not enabled:
        yield None
        return
    server, url = memory_fhir.serve(resources)
    try:
        yield url
    finally:
        server.shutdown()


def fire(
    scenario: Scenario,
    *,
    base_url: str = "http://127.0.0.1:8000",
    prefetch: bool = True,
    session: requests.Session | None = None,
) -> Exchange:
    session = session or requests.Session()
    base_url = base_url.rstrip("/")
    service = discover(session, base_url, scenario.hook)
    with _local_fhir(scenario.resources, enabled=not prefetch) as fhir_url:
        body = scenario.hook_request(
            service.get("prefetch") if prefetch else None,
            fhir_server=fhir_url,
            hook_instance=str(uuid.uuid4()),
        )
        response = _call(
            session,
            "POST",
            f"{base_url}/cds-services/{service['id']}",
            json=body,
            headers={"Content-Type": "application/json"},
        )
    try:
        payload = response.json()
    except ValueError:
        payload = response.text
    return Exchange(response.status_code, payload, body)


def scenario_from_bundle(path: str, hook: str, patient_id: str | None) -> Scenario:
    """A one-off scenario from any FHIR Bundle file (patient-view only: no draft orders)."""
    resources = load_bundle_file(path)
    patients = [r for r in resources if r.get("resourceType") == "Patient"]
    if patient_id is None:
        if len(patients) != 1:
            raise FireError("the bundle must hold exactly one Patient, or pass --patient")
        patient_id = patients[0]["id"]
    if hook != "patient-view":
        raise FireError("a bundle file can only fire patient-view (it carries no draft orders)")
    return Scenario(
        name=path,
        description=f"resources from {path}",
        patient_id=patient_id,
        hook=hook,
        draft_orders=[],
        selections=[],
        expected_cards=frozenset(),
        expected_missing_assessments=None,
        resources=resources,
    )


def print_cards(exchange: Exchange, out: TextIO = sys.stdout, colour: bool = True) -> None:
    def c(code: str) -> str:
        return code if colour else ""

    if exchange.status != 200:
        out.write(f"{c(BOLD)}HTTP {exchange.status}{c(RESET)}\n")
        out.write(json.dumps(exchange.body, indent=2) + "\n")
        return
    cards = exchange.body.get("cards", [])
    out.write(f"{c(BOLD)}{len(cards)} card(s){c(RESET)}\n")
    for card in cards:
        indicator = card.get("indicator", "info")
        topic = card.get("source", {}).get("topic", {}).get("code", "")
        out.write(
            f"\n{c(COLOURS.get(indicator, ''))}{c(BOLD)}[{indicator.upper()}]{c(RESET)} "
            f"{c(BOLD)}{card.get('summary')}{c(RESET)}  {c(DIM)}{topic}{c(RESET)}\n"
        )
        for line in (card.get("detail") or "").splitlines():
            out.write(f"    {line}\n")
        for suggestion in card.get("suggestions", []):
            star = " (recommended)" if suggestion.get("isRecommended") else ""
            out.write(f"  {c(BOLD)}> {suggestion['label']}{star}{c(RESET)}\n")
            for action in suggestion.get("actions", []):
                target = action.get("resourceId") or action.get("resource", {}).get(
                    "resourceType", ""
                )
                out.write(f"      {action['type']} {target}: {action['description']}\n")
        for reason in card.get("overrideReasons", []):
            out.write(f"  {c(DIM)}override: {reason['display']}{c(RESET)}\n")
        for link in card.get("links", []):
            out.write(f"  {c(DIM)}link: {link['label']} <{link['url']}>{c(RESET)}\n")


def load(name: str) -> Scenario:
    try:
        return load_scenario(name)
    except (FileNotFoundError, ValueError) as exc:
        raise FireError(str(exc)) from None
