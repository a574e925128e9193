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


def test_an_origin_list_varies_every_answer_by_origin(settings):
    """With a list of origins the answer depends on Origin, so every answer says so (a cache
    must not hand one origin's answer, with or without the header, to another)."""
    from cds_service import create_app

    app = create_app(settings.with_overrides(cors_origins=("https://ehr.example.test",)))
    client = app.test_client()
    allowed = client.get("/cds-services", headers={"Origin": "https://ehr.example.test"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ehr.example.test"
    for headers in ({"Origin": "https://other.example.test"}, {}):
        answer = client.get("/cds-services", headers=headers)
        assert "Access-Control-Allow-Origin" not in answer.headers
        assert "Origin" in answer.headers.get("Vary", "")
    assert "Origin" in allowed.headers.get("Vary", "")


def test_health(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"knowledge": True, "database": True}
