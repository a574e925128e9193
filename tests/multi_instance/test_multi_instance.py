"""Two service instances (gunicorn, 2 workers each) behind one public URL, one PostgreSQL.

What a load balancer in front of several replicas needs to be true: a token accepted by one
instance is refused by the other (shared ``jti`` table), feedback sent to both is stored once
per entry, and concurrent writers through both instances lose nothing. The instances are real
``hypermobility-cds serve`` processes on free loopback ports with JWT auth required; the
trusted issuer is a throw-away ES384 key whose JWKS is written to a temp file.

Needs ``CDS_TEST_POSTGRES_URL`` (``.ci/run`` starts a server); bounded to well under 2 minutes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url

from cds_service.devtools.scenarios import load_scenario
from cds_service.security import sign_development_token
from cds_service.storage.schema import feedback as feedback_table
from cds_service.storage.schema import served_cards
from tests.postgres import fresh_schema_url
from tools.soak import ServedProcess

pytestmark = pytest.mark.integration

PUBLIC = "https://cds.example.test"  # the load balancer's address: the JWT audience of both
ISS = "https://ehr.example.test"
SERVICE = "hypermobility-pain-patient-view"
FEEDBACK = f"/cds-services/{SERVICE}/feedback"
START_TIMEOUT_S = 45


@dataclass
class Issuer:
    pem: bytes
    kid: str

    def token(self, path: str) -> str:
        return sign_development_token(self.pem, kid=self.kid, iss=ISS, aud=PUBLIC + path)

    def headers(self, path: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(path)}"}


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    yield from fresh_schema_url("mi")


@pytest.fixture(scope="module")
def issuer(tmp_path_factory) -> tuple[Issuer, Path]:
    key = ec.generate_private_key(ec.SECP384R1())
    kid = f"mi-{uuid.uuid4().hex[:8]}"
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "ES384",
           "use": "sig"}
    folder = tmp_path_factory.mktemp("issuer")
    (folder / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    config = folder / "issuers.json"
    config.write_text(json.dumps({"issuers": [{"iss": ISS, "jwks_file": "jwks.json"}]}))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return Issuer(pem, kid), config


def _instance(
    database_url: str, issuers_file: Path, workdir: Path, **env: str
) -> ServedProcess:
    """A production-profile instance (JWT required) behind :data:`PUBLIC`, not yet started;
    ``env`` adds or overrides variables."""
    return ServedProcess(workdir, workers=2, database_url=database_url, env={
        "CDS_PROFILE": "production",
        "CDS_AUTH": "required",
        "CDS_TRUSTED_ISSUERS_FILE": str(issuers_file),
        "CDS_PUBLIC_BASE_URL": PUBLIC,
        "CDS_FHIR_SERVER_ALLOWLIST": "https://fhir.example.test/r4",
        **env,
    })


@pytest.fixture(scope="module")
def instances(database_url, issuer, tmp_path_factory) -> Iterator[list[ServedProcess]]:
    _, issuers_file = issuer
    pair = [_instance(database_url, issuers_file, tmp_path_factory.mktemp(f"instance-{i}"))
            for i in range(2)]
    try:
        # Both start at once against an empty schema: the migration lock is exercised too.
        for instance in pair:
            instance.launch()
        for instance in pair:
            instance.wait_ready(START_TIMEOUT_S)
        yield pair
    finally:
        for instance in pair:
            instance.stop()  # SIGTERM; killed if it has not stopped within 30 s


def _count(database_url: str, table) -> int:
    engine = create_engine(make_url(database_url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar_one()
    finally:
        engine.dispose()


def _entry(card: str) -> dict:
    return {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-20T10:06:00Z"}


def test_a_token_replayed_to_the_other_instance_is_refused(instances, issuer):
    signer, _ = issuer
    first, second = instances
    token = signer.token("/cds-services")
    auth = {"Authorization": f"Bearer {token}"}
    assert requests.get(first.url + "/cds-services", headers=auth, timeout=10).status_code == 200
    replay = requests.get(second.url + "/cds-services", headers=auth, timeout=10)
    assert replay.status_code == 401
    assert token not in replay.text
    # Same instance, other worker or not: refused as well.
    for _ in range(4):
        assert requests.get(first.url + "/cds-services", headers=auth, timeout=10).status_code \
            == 401
    # The second instance accepts a fresh token, so the 401 above was the replay check.
    fresh = signer.headers("/cds-services")
    assert requests.get(second.url + "/cds-services", headers=fresh, timeout=10).status_code \
        == 200


def test_feedback_sent_to_both_instances_is_counted_once(instances, issuer, database_url):
    signer, _ = issuer
    before = _count(database_url, feedback_table)
    body = {"feedback": [_entry("both-1"), _entry("both-2")]}
    for instance in (*instances, *instances):
        response = requests.post(instance.url + FEEDBACK, json=body,
                                 headers=signer.headers(FEEDBACK), timeout=10)
        assert response.status_code == 200, response.text
    assert _count(database_url, feedback_table) == before + 2


def test_concurrent_writers_through_both_instances_lose_nothing(instances, issuer, database_url):
    signer, _ = issuer
    before = _count(database_url, feedback_table)
    writers, per_writer = 8, 12

    def writer(n: int) -> list[int]:
        statuses = []
        with requests.Session() as session:
            for i in range(per_writer):
                instance = instances[(n + i) % 2]
                # Each request: one entry of its own, one shared with another writer.
                shared = _entry(f"shared-{(n * per_writer + i) % 48}")
                body = {"feedback": [_entry(f"w{n}-{i}"), shared]}
                response = session.post(instance.url + FEEDBACK, json=body,
                                        headers=signer.headers(FEEDBACK), timeout=30)
                statuses.append(response.status_code)
        return statuses

    with ThreadPoolExecutor(writers) as pool:
        statuses = [s for batch in pool.map(writer, range(writers)) for s in batch]
    assert statuses == [200] * (writers * per_writer)
    # Every acknowledged entry is there, each once: own entries + 48 distinct shared ones.
    assert _count(database_url, feedback_table) == before + writers * per_writer + 48


def test_hook_calls_on_both_instances_record_served_cards(instances, issuer, database_url):
    signer, _ = issuer
    scenario = load_scenario("pv-assessment-gaps-all-missing")
    service = scenario.service
    path = f"/cds-services/{service.id}"
    cards = 0
    for instance in instances:
        body = scenario.hook_request(dict(service.prefetch))
        response = requests.post(instance.url + path, json=body, headers=signer.headers(path),
                                 timeout=30)
        assert response.status_code == 200, response.text
        cards += len(response.json()["cards"])
    assert cards >= 2
    # Served-card analytics are written off the request path, within about half a second.
    deadline = time.monotonic() + 10
    while _count(database_url, served_cards) < cards and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _count(database_url, served_cards) == cards


def test_graceful_shutdown_writes_buffered_served_cards(database_url, issuer, tmp_path):
    """SIGTERM (a rolling deploy): each worker flushes its served-card buffer before exiting."""
    signer, issuers_file = issuer
    scenario = load_scenario("pv-assessment-gaps-all-missing")
    service = scenario.service
    path = f"/cds-services/{service.id}"
    before = _count(database_url, served_cards)
    # Nothing is written until shutdown.
    instance = _instance(database_url, issuers_file, tmp_path,
                         CDS_SERVED_CARDS_FLUSH_S="600").launch()
    try:
        instance.wait_ready(START_TIMEOUT_S)
        cards = 0
        for _ in range(6):  # spread over both workers
            body = scenario.hook_request(dict(service.prefetch))
            response = requests.post(instance.url + path, json=body,
                                     headers=signer.headers(path), timeout=30)
            assert response.status_code == 200, response.text
            cards += len(response.json()["cards"])
        time.sleep(0.5)
        assert _count(database_url, served_cards) == before  # still buffered
    finally:
        returncode = instance.stop()
    assert returncode == 0, instance.tail(40)
    assert _count(database_url, served_cards) == before + cards
