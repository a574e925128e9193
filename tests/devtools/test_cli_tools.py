"""The developer commands: fire (against a real local server), scenarios, load-fixtures."""

from __future__ import annotations

import io
import json
import threading

import pytest
import responses
from werkzeug.serving import make_server

from cds_service import create_app
from cds_service.cli import main
from cds_service.devtools.fire import fire, print_cards
from cds_service.devtools.load_fixtures import LoadError, load_fixtures, transaction
from cds_service.devtools.scenarios import list_patients, load_patient, load_scenario
from cds_service.settings import Settings


@pytest.fixture
def live_service(tmp_path, monkeypatch):
    """The app in development profile (JWT required) on a real loopback port."""
    monkeypatch.setenv("CDS_DEV_KEY_DIR", str(tmp_path / "keys"))
    server = make_server("127.0.0.1", 0, None, threaded=True)
    port = server.server_port
    settings = Settings.development(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        public_base_urls=(f"http://127.0.0.1:{port}",),
    )
    server.app = create_app(settings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize("name", ["pv-rehab-referral", "sign-opioid-steroid-brace"])
def test_fire_signs_and_gets_the_expected_cards(live_service, name, prefetch):
    scenario = load_scenario(name)
    exchange = fire(scenario, base_url=live_service, prefetch=prefetch)
    assert exchange.status == 200
    fired = {c["source"]["topic"]["code"] for c in exchange.body["cards"]}
    assert fired == set(scenario.expected_cards)
    assert ("prefetch" in exchange.request) is prefetch
    out = io.StringIO()
    print_cards(exchange, out, colour=False)
    text = out.getvalue()
    assert f"{len(fired)} card(s)" in text
    for card in exchange.body["cards"]:
        assert card["summary"] in text


def test_fire_cli_json(live_service, capsys):
    assert main(["fire", "pv-rehab-referral", "--url", live_service, "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert {c["source"]["topic"]["code"] for c in body["cards"]} == set(
        load_scenario("pv-rehab-referral").expected_cards
    )


def test_fire_reports_an_unreachable_service(capsys):
    assert main(["fire", "pv-rehab-referral", "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_scenarios_lists_every_scenario(capsys):
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    assert "sign-opioid-steroid-brace" in out and "opioid-order" in out


def test_transaction_puts_every_resource_at_its_id():
    resources = load_patient("opioid-active")
    bundle = transaction(resources)
    assert bundle["type"] == "transaction"
    assert bundle["entry"][0]["resource"]["resourceType"] == "Patient"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["request"] == {
            "method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}


@responses.activate
def test_load_fixtures_posts_one_transaction_per_patient():
    responses.post("https://fhir.test/r4", json={"resourceType": "Bundle", "type":
                                                  "transaction-response"})
    loaded = load_fixtures("https://fhir.test/r4/")
    assert [item.patient_id for item in loaded] == list_patients()
    assert len(responses.calls) == len(list_patients())
    sent = json.loads(responses.calls[0].request.body)
    assert sent["type"] == "transaction"


@responses.activate
def test_load_fixtures_fails_clearly_when_refused(capsys):
    responses.post("https://fhir.test/r4", status=422, json={
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing",
                   "diagnostics": "update-as-create off"}],
    })
    with pytest.raises(LoadError, match="update-as-create off"):
        load_fixtures("https://fhir.test/r4", patients=["opioid-active"])
    assert main(["load-fixtures", "--fhir-server", "https://fhir.test/r4",
                 "--patient", "opioid-active"]) == 1
    assert "refused patient opioid-active" in capsys.readouterr().err


@responses.activate
def test_load_fixtures_reads_details_text_of_a_refusal():
    responses.post("https://fhir.test/r4", status=400, json={
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "details": {"text": "bad base"}}],
    })
    with pytest.raises(LoadError, match="bad base"):
        load_fixtures("https://fhir.test/r4", patients=["opioid-active"])


def test_feedback_report_from_a_real_database(tmp_path, monkeypatch, capsys):
    """Cards served and feedback given through the API show up per rule in the report."""
    url = f"sqlite:///{tmp_path / 'report.sqlite3'}"
    monkeypatch.setenv("CDS_DATABASE_URL", url)
    app = create_app(Settings(auth="off", database_url=url))
    client = app.test_client()
    scenario = load_scenario("sign-opioid-steroid-brace")
    from cds_service.api.services import SERVICES

    sign = "/cds-services/hypermobility-pain-order-sign"
    body = scenario.hook_request(dict(SERVICES["hypermobility-pain-order-sign"].prefetch))
    cards = client.post(sign, json=body).get_json()["cards"]
    by_rule = {c["source"]["topic"]["code"]: c for c in cards}
    opioid = by_rule["opioid-order"]
    steroid = by_rule["corticosteroid-order"]
    feedback = [
        {"card": opioid["uuid"], "outcome": "overridden",
         "outcomeTimestamp": "2026-11-20T10:00:00Z",
         "overrideReason": {"reason": opioid["overrideReasons"][1]}},
        {"card": steroid["uuid"], "outcome": "accepted",
         "outcomeTimestamp": "2026-11-20T10:01:00Z",
         "acceptedSuggestions": [{"id": steroid["suggestions"][0]["uuid"]}]},
    ]
    assert client.post(sign + "/feedback", json={"feedback": feedback}).status_code == 200
    app.extensions["cds"].store.flush()

    assert main(["feedback-report", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["by_rule"]["opioid-order"]["overridden"] == 1
    assert report["by_rule"]["opioid-order"]["override_reasons"] == {
        opioid["overrideReasons"][1]["display"]: 1}
    assert report["by_rule"]["corticosteroid-order"]["acceptance_rate"] == 1.0
    assert report["by_rule"]["passive-modality-order"]["no_feedback"] == 1
    assert report["by_service"]["hypermobility-pain-order-sign"]["shown"] == 3

    assert main(["feedback-report", "--since", "2999-01-01"]) == 0
    assert "opioid-order" not in capsys.readouterr().out


def test_listing_into_a_closed_pipe_is_not_an_error():
    """`hypermobility-cds scenarios | head -1` used to end in a BrokenPipeError traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", "from cds_service.cli import main; raise SystemExit(main())",
         "scenarios"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in stderr
