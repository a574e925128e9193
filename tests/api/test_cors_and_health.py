"""CORS for browser clients (the CDS Hooks sandbox) and the health endpoints."""

PV = "/cds-services/hypermobility-pain-patient-view"


def test_preflight_is_answered_without_auth(client):
    response = client.options(
        PV,
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    methods = response.headers["Access-Control-Allow-Methods"]
    assert {"GET", "POST", "OPTIONS"} <= {m.strip() for m in methods.split(",")}
    headers = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in headers and "content-type" in headers


def test_cors_headers_on_normal_responses(client):
    response = client.get("/cds-services", headers={"Origin": "https://sandbox.cds-hooks.org"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_health(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"knowledge": True, "database": True}
