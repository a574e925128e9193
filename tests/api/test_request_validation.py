"""Bad requests get a 4xx with an OperationOutcome saying what is wrong, never a 500."""

import io
import json

import pytest
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData

from cds_service.devtools.scenarios import load_scenario

PV = "/cds-services/hypermobility-pain-patient-view"
SIGN = "/cds-services/hypermobility-pain-order-sign"
SELECT = "/cds-services/hypermobility-pain-order-select"


def outcome(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and all(i["diagnostics"] for i in body["issue"])
    return " ".join(i["diagnostics"] for i in body["issue"])


def test_valid_minimal_request_answers_empty_cards(client, make_request):
    response = client.post(PV, json=make_request())
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}


@pytest.mark.parametrize("member", ["hook", "hookInstance", "context"])
def test_missing_required_member(client, make_request, member):
    body = make_request()
    del body[member]
    assert member in outcome(client.post(PV, json=body), 400)


@pytest.mark.parametrize(
    "member,value",
    [("hook", 7), ("hookInstance", "not-a-uuid"), ("context", "nope"), ("prefetch", [1])],
)
def test_malformed_member(client, make_request, member, value):
    body = make_request(**{member: value})
    assert member in outcome(client.post(PV, json=body), 400)


def test_missing_patient_id(client, make_request):
    body = make_request()
    del body["context"]["patientId"]
    assert "context.patientId" in outcome(client.post(PV, json=body), 400)


def test_patient_id_must_be_a_fhir_id(client, make_request):
    body = make_request()
    body["context"]["patientId"] = "../../Patient?x=1"
    assert "context.patientId" in outcome(client.post(PV, json=body), 400)


def test_order_sign_needs_draft_orders(client, make_request):
    body = make_request("order-sign")
    del body["context"]["draftOrders"]
    assert "draftOrders" in outcome(client.post(SIGN, json=body), 400)


def test_draft_orders_must_be_a_bundle(client, make_request):
    body = make_request("order-sign")
    body["context"]["draftOrders"] = {"resourceType": "Patient"}
    assert "draftOrders" in outcome(client.post(SIGN, json=body), 400)


def test_order_select_needs_selections(client, make_request):
    body = make_request("order-select")
    body["context"]["selections"] = ["not a reference"]
    assert "selections" in outcome(client.post(SELECT, json=body), 400)


def test_hook_must_match_the_service(client, make_request):
    body = make_request("order-select")
    assert "order-sign" in outcome(client.post(SIGN, json=body), 400)


def test_the_sandbox_pama_tabs_sign_is_answered_in_the_development_profile(settings,
                                                                         make_request):
    """The sandbox's PAMA tab signs with "hook": "order-select" (shared notes): answered as
    order-sign in the development profile, which trusts the sandbox, and refused elsewhere.
    The other mismatches stay refused in both."""
    from cds_service import create_app

    mri = {"resourceType": "ServiceRequest", "id": "example-request-id", "status": "draft",
           "intent": "plan", "subject": {"reference": "Patient/p1"},
           "code": {"coding": [{"system": "http://loinc.org", "code": "30687-8"}]}}
    from tests.builders import bundle, cohort_conditions, patient

    body = make_request("order-select")
    body["prefetch"]["patient"] = patient("p1")
    body["prefetch"]["conditions"] = bundle(*cohort_conditions("p1"))
    body["context"]["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": mri}]}
    body["context"]["selections"] = ["ServiceRequest/example-request-id"]
    development = create_app(settings.with_overrides(profile="development", auth="off"))
    response = development.test_client().post(SIGN, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    cards = response.get_json()["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["imaging-radiograph-first"]
    assert "order-sign" in outcome(create_app(settings).test_client().post(SIGN, json=body), 400)
    patient_view = make_request("patient-view")
    assert outcome(development.test_client().post(SIGN, json=patient_view), 400)
    body["hook"] = "order-sign"
    assert outcome(development.test_client().post(SELECT, json=body), 400)


def test_fhir_authorization_requires_fhir_server(client, make_request):
    body = make_request(
        fhirAuthorization={
            "access_token": "secret",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cds",
        }
    )
    assert "fhirServer" in outcome(client.post(PV, json=body), 400)


def test_body_that_is_not_json(client):
    response = client.post(PV, data="{not json", content_type="application/json")
    assert "not valid JSON" in outcome(response, 400)


def test_body_that_is_a_json_array(client):
    assert "JSON object" in outcome(client.post(PV, json=[1, 2]), 400)


def test_wrong_content_type(client, make_request):
    response = client.post(PV, data=json.dumps(make_request()), content_type="text/plain")
    outcome(response, 415)


def test_duplicate_keys_are_refused(client):
    raw = '{"hook": "patient-view", "hook": "order-sign"}'
    assert "repeats the key" in outcome(
        client.post(PV, data=raw, content_type="application/json"), 400
    )


def test_too_deep_nesting(client, make_request):
    body = make_request()
    deep: dict = {}
    node = deep
    for _ in range(200):
        node["a"] = {}
        node = node["a"]
    body["extension"] = deep
    assert "nested deeper" in outcome(client.post(PV, json=body), 400)


def test_pathologically_deep_nesting_is_not_a_500(client):
    raw = "[" * 100_000 + "]" * 100_000
    response = client.post(PV, data=raw, content_type="application/json")
    assert response.status_code in (400, 413)
    assert response.get_json()["resourceType"] == "OperationOutcome"
    if response.status_code == 400:
        assert "nested too deeply to read" in response.get_data(as_text=True)


def test_a_body_of_tiny_values_is_413_before_it_is_parsed(settings, make_request):
    """A security review: 32 MiB of empty objects (3 bytes of text each, 64 of Python) cost a
    worker about 1 GB. Each comma, bracket and brace is charged against the cap too."""
    from dataclasses import replace

    from cds_service import create_app

    small = create_app(replace(settings, max_body_bytes=1024 * 1024)).test_client()
    body = make_request()
    body["extension"] = {"x": [{}] * 50_000}  # 200 kB: charged 24 bytes an object, 1.2 MB
    response = small.post(PV, json=body)
    assert "too many JSON values" in outcome(response, 413)
    body["extension"] = {"x": [{}] * 40_000}  # charged 960 kB
    assert small.post(PV, json=body).status_code == 200


@pytest.mark.parametrize("where", ["member", "dropped entry", "kept entry"])
def test_a_long_body_of_tiny_values_is_413_wherever_they_sit(client, make_request, where):
    """A long body (over 1 MiB) is read a few entries at a time, and only what is kept, or a
    chunk of entries too large to pass uncounted, is charged against the cap: the whole text
    is not counted (4.5 ms for a 10k chart). The tiny values must be caught in each place."""
    tiny = [{}] * 1_500_000  # 4.5 MB of text, charged 36 MB: over the 32 MiB cap
    body = make_request()
    vital = {"resourceType": "Observation", "id": "v", "status": "final",
             "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
             "subject": {"reference": "Patient/p1"}}
    if where == "member":
        body["extension"] = {"x": tiny}
    elif where == "dropped entry":
        body["prefetch"]["observations"] = {"resourceType": "Bundle", "type": "searchset",
                                            "entry": [{"resource": {**vital, "x": tiny}}]}
    else:
        condition = {"resourceType": "Condition", "id": "c", "subject": {"reference":
                     "Patient/p1"}, "code": {"coding": [{"system":
                     "http://hl7.org/fhir/sid/icd-10-cm", "code": "M35.7"}]}, "x": tiny}
        body["prefetch"]["conditions"] = {"resourceType": "Bundle", "type": "searchset",
                                          "entry": [{"resource": condition}]}
    assert "too many JSON values" in outcome(client.post(PV, json=body), 413)


def test_kept_entries_are_charged_together_however_small_each(client, make_request):
    """What a long body keeps is charged as a whole: 1,100 kept Conditions, each a few kB of
    empty objects, stay in chunks under 256 KiB, yet keep 35 MB of charge (a review found the
    case untested: only one huge entry was)."""
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                 "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                      "code": "M35.7"}]}, "x": [{}] * 1_300}
    body = make_request()
    body["prefetch"]["conditions"] = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": {**condition, "id": f"c{n}"}} for n in range(1_100)]}
    assert "too many JSON values" in outcome(client.post(PV, json=body), 413)


def test_body_too_large(client, app, make_request):
    body = make_request()
    body["extension"] = {"x": "a" * (app.extensions["cds"].settings.max_body_bytes + 10)}
    outcome(client.post(PV, json=body), 413)


@pytest.mark.parametrize("instance", [
    "urn:uuid:d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "{d1577c69-dfbe-44ad-ba6d-3e05e953b2ea}",
    "d1577c69dfbe44adba6d3e05e953b2ea",
    "urn:" * 1000 + "{" + "-" * 1000 + "d1577c69dfbe44adba6d3e05e953b2ea}",
])
def test_hook_instance_must_be_a_canonical_uuid(client, make_request, instance):
    """uuid.UUID() reads all of these; the last one, a megabyte long, reached every log line."""
    body = make_request(hookInstance=instance)
    assert "hookInstance" in outcome(client.post(PV, json=body), 400)
    body["hookInstance"] = "D1577C69-DFBE-44AD-BA6D-3E05E953B2EA"  # case does not matter
    assert client.post(PV, json=body).status_code == 200


def post_chunked(client, app, body: dict, size_over_cap: int):
    """POST ``body`` padded to the cap plus ``size_over_cap`` bytes, without Content-Length
    (chunked, as gunicorn hands such a body on)."""
    cap = app.extensions["cds"].settings.max_body_bytes
    raw = json.dumps(body).encode()
    raw += b" " * (cap + size_over_cap - len(raw))
    return client.post(
        PV,
        input_stream=io.BytesIO(raw),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize("over", [1, 10_000])
def test_a_chunked_body_too_large_is_413_not_cut_short(client, app, make_request, over):
    """Such a body used to be cut at the cap and read as it was: bad JSON (400) or, cut in
    trailing space, a valid request."""
    outcome(post_chunked(client, app, make_request(), over), 413)


def test_a_chunked_body_of_exactly_the_cap_is_read(client, app, make_request):
    response = post_chunked(client, app, make_request(), 0)
    assert response.status_code == 200, response.get_data(as_text=True)


class _BrokenChunks(io.BytesIO):
    """A body stream that fails as gunicorn's chunked reader does on a malformed chunk."""

    def __init__(self, error: Exception) -> None:
        super().__init__(b"{}")
        self.error = error

    def read(self, *_args) -> bytes:
        raise self.error

    readline = readinto = read1 = read


@pytest.mark.parametrize("path", [PV, PV + "/feedback"])
@pytest.mark.parametrize("error", [InvalidChunkSize(b"zz"), ChunkMissingTerminator(b"XX"),
                                   NoMoreData(b"")])
def test_a_malformed_chunked_body_is_400_not_500(client, path, error):
    """Seen under gunicorn: "zz" as a chunk size answered 500 (an unhandled InvalidChunkSize)."""
    response = client.post(
        path,
        input_stream=_BrokenChunks(error),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert "could not be read" in outcome(response, 400)


def test_a_reader_failing_for_another_reason_is_our_500_not_the_clients_400(client):
    """Only the reader's refusals of the client's bytes are a 400 (found by review: every
    exception was, a bug of ours included)."""
    response = client.post(
        PV,
        input_stream=_BrokenChunks(RuntimeError("a bug of ours")),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert "failed to process" in outcome(response, 500)


def test_unknown_service_is_404(client, make_request):
    outcome(client.post("/cds-services/nope", json=make_request()), 404)


def test_unknown_path_is_404_operation_outcome(client):
    outcome(client.get("/nowhere"), 404)


def test_wrong_method_is_405(client):
    outcome(client.get(PV), 405)


@pytest.mark.parametrize("path,method,allowed", [(PV, "get", "POST"), ("/cds-services", "delete",
                                                                        "GET")])
def test_a_405_names_the_methods_allowed(client, path, method, allowed):
    """RFC 9110 section 15.5.6: a 405 MUST carry an Allow header."""
    response = getattr(client, method)(path)
    outcome(response, 405)
    assert allowed in {m.strip() for m in response.headers.get("Allow", "").split(",")}


def test_extension_members_are_accepted(client, make_request):
    body = make_request(extension={"org.example.flag": True})
    body["context"]["extension"] = {"org.example.ctx": 1}
    assert client.post(PV, json=body).status_code == 200


@pytest.mark.parametrize("where", ["", "context"])
@pytest.mark.parametrize("value", ["x", [1], 5, None])
def test_an_extension_must_be_an_object(client, make_request, where, value):
    """CDS Hooks 2.0 "Extensions": the value of ``extension`` MUST be a JSON object."""
    body = make_request()
    (body[where] if where else body)["extension"] = value
    path = f"{where}.extension" if where else "extension"
    assert path in outcome(client.post(PV, json=body), 400)


def test_fhir_extensions_inside_draft_orders_stay_arrays(client, make_request):
    """The object rule is CDS Hooks': a FHIR Bundle and its entries carry FHIR's array."""
    body = make_request("order-sign")
    fhir_extension = [{"url": "http://example.org/x", "valueString": "y"}]
    body["context"]["draftOrders"]["extension"] = fhir_extension
    body["context"]["draftOrders"]["entry"] = [{"extension": fhir_extension, "resource": {
        "resourceType": "MedicationRequest", "id": "m1", "status": "draft", "intent": "order",
        "extension": fhir_extension, "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"text": "acetaminophen 500 mg tablet"}}}]
    response = client.post(SIGN, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("hook,path", [("patient-view", PV), ("order-sign", SIGN),
                                       ("order-select", SELECT)])
def test_user_id_is_required(client, make_request, hook, path):
    """CDS Hooks: context.userId is REQUIRED for patient-view, order-sign and order-select."""
    body = make_request(hook)
    del body["context"]["userId"]
    assert "context.userId" in outcome(client.post(path, json=body), 400)
    body["context"]["userId"] = ""
    assert "context.userId" in outcome(client.post(path, json=body), 400)


@pytest.mark.parametrize("hook,path", [("patient-view", PV), ("order-sign", SIGN),
                                       ("order-select", SELECT)])
@pytest.mark.parametrize("user", ["abc", "Device/1", "Practitioner/", "Practitioner/a b",
                                  "practitioner/1", "Practitioner/1/_history/2"])
def test_a_user_id_not_of_the_form_type_slash_id_is_refused(client, make_request, hook, path,
                                                          user):
    """CDS Hooks 2.0: userId is "Type/id", of a Practitioner, PractitionerRole, Patient or
    RelatedPerson."""
    body = make_request(hook)
    body["context"]["userId"] = user
    assert "context.userId" in outcome(client.post(path, json=body), 400)


@pytest.mark.parametrize("user", ["Practitioner/COREPRACTITIONER1", "PractitionerRole/r-9.x",
                                  "Patient/p1", "RelatedPerson/mum"])
def test_each_user_type_the_hooks_name_is_accepted(client, make_request, user):
    body = make_request("patient-view")
    body["context"]["userId"] = user
    assert client.post(PV, json=body).status_code == 200


@pytest.mark.parametrize("value", ["tökén€", "abc\r\nX-Evil: 1", "two words", "", "tab\there"])
def test_access_token_must_be_a_bearer_token(client, make_request, value):
    """Such values could not be sent in a header, so the FHIR fallback failed as a 412
    "internal-error", an error of ours in the EHR's eyes."""
    body = make_request(fhirServer="https://fhir.example.test/r4", fhirAuthorization={
        "access_token": value, "token_type": "Bearer", "expires_in": 60, "scope": "user/*.read",
        "subject": "cds"})
    assert "fhirAuthorization.access_token" in outcome(client.post(PV, json=body), 400)


@pytest.mark.parametrize("value", ["eyJhbGciOi.eyJzdWIi.c2ln-_", "YWJj+/==", "0f3a-9c", "a~b",
                                   "00Dxx0000001gPL!AR8AQJXg5oj8jXSg", "a:b", "tok%3D"])
def test_bearer_tokens_of_every_common_form_are_accepted(client, make_request, value):
    body = make_request(fhirServer="https://fhir.example.test/r4", fhirAuthorization={
        "access_token": value, "token_type": "Bearer", "expires_in": 60, "scope": "user/*.read",
        "subject": "cds"})
    response = client.post(PV, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("value", ["bearer", "BEARER", "Bearer"])
def test_token_type_bearer_is_read_in_any_case(client, make_request, value):
    """RFC 6749 section 5.1: token_type is case-insensitive, and EHRs pass on what their
    authorization server says ("bearer"); the whole call was refused (400)."""
    body = make_request(fhirServer="https://fhir.example.test/r4", fhirAuthorization={
        "access_token": "t", "token_type": value, "expires_in": 60, "scope": "user/*.read",
        "subject": "cds"})
    response = client.post(PV, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("value", ["Basic", "mac", "", 1, None])
def test_token_type_other_than_bearer_is_refused(client, make_request, value):
    body = make_request(fhirServer="https://fhir.example.test/r4", fhirAuthorization={
        "access_token": "t", "token_type": value, "expires_in": 60, "scope": "user/*.read",
        "subject": "cds"})
    assert "fhirAuthorization.token_type" in outcome(client.post(PV, json=body), 400)


@pytest.mark.parametrize("value", ["300", True, 1.5])
def test_expires_in_must_be_an_integer(client, make_request, value):
    body = make_request(fhirServer="https://fhir.example.test/r4", fhirAuthorization={
        "access_token": "t", "token_type": "Bearer", "expires_in": value, "scope": "user/*.read",
        "subject": "cds"})
    assert "fhirAuthorization.expires_in" in outcome(client.post(PV, json=body), 400)


@pytest.mark.parametrize("member,value", [
    ("draftOrders", {"resourceType": "Bundle", "entry": []}),
    ("draftOrders", None), ("draftOrders", 5), ("selections", 5), ("selections", True),
])
def test_patient_view_ignores_order_members_it_does_not_define(client, make_request, member,
                                                               value):
    """Unknown context members are kept and ignored: patient-view has no draft orders."""
    body = make_request()
    body["context"][member] = value
    response = client.post(PV, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"cards": []}


@pytest.mark.parametrize("link", [5, True, 1.5, "next", {"relation": "next"}])
def test_a_prefetch_bundle_link_must_be_an_array(client, make_request, link):
    body = make_request()
    body["prefetch"]["conditions"] = {"resourceType": "Bundle", "entry": [], "link": link}
    assert "prefetch.conditions.link" in outcome(client.post(PV, json=body), 400)


@pytest.mark.parametrize("entry", [{}, "", 0, False, 5, None])
def test_a_prefetch_bundle_entry_must_be_an_array(client, make_request, entry):
    body = make_request()
    body["prefetch"]["conditions"] = {"resourceType": "Bundle", "entry": entry}
    assert "prefetch.conditions.entry" in outcome(client.post(PV, json=body), 400)


@pytest.mark.parametrize("bundle,where", [
    ({"entry": ["junk"]}, "prefetch.conditions.entry[0]"),
    ({"entry": [{}, 5]}, "prefetch.conditions.entry[1]"),
    ({"link": ["junk"]}, "prefetch.conditions.link[0]"),
    ({"link": [{"relation": "next", "url": 5}]}, "prefetch.conditions.link[0].url"),
    ({"link": [{"relation": "next", "url": " "}]}, "prefetch.conditions.link[0].url"),
])
@pytest.mark.parametrize("paginated", [True, False])
def test_a_malformed_prefetch_bundle_is_the_clients_400(client, make_request, bundle, where,
                                                        paginated):
    """A paginated one used to be followed and blamed on fhirServer (412 "not-fhir"), or with
    no fhirServer, 412 "no fhirServer to page"; an unpaginated one had its junk skipped."""
    body = make_request(fhirServer="https://fhir.example.org/r4")
    value = {"resourceType": "Bundle", "entry": [], **bundle}
    if paginated and "link" not in bundle:
        value["link"] = [{"relation": "next", "url": "https://fhir.example.org/r4/Condition?p=2"}]
    body["prefetch"]["conditions"] = value
    assert where in outcome(client.post(PV, json=body), 400)


def test_invalid_prefetch_value(client, make_request):
    body = make_request()
    body["prefetch"]["conditions"] = "oops"
    assert "prefetch.conditions" in outcome(client.post(PV, json=body), 400)


def test_missing_prefetch_without_fhir_server_is_412(client, make_request):
    body = make_request()
    del body["prefetch"]["conditions"]
    assert "conditions" in outcome(client.post(PV, json=body), 412)


def test_too_many_draft_orders(client, app, make_request):
    limit = app.extensions["cds"].settings.max_draft_orders
    body = make_request("order-sign")
    body["context"]["draftOrders"]["entry"] = [
        {"resource": {"resourceType": "MedicationRequest", "id": f"m{i}"}} for i in range(limit + 1)
    ]
    assert "draftOrders" in outcome(client.post(SIGN, json=body), 400)


def test_too_many_prefetch_keys(client, app, make_request):
    limit = app.extensions["cds"].settings.max_prefetch_keys
    body = make_request()
    body["prefetch"].update({f"extra{i}": None for i in range(limit)})
    assert "prefetch" in outcome(client.post(PV, json=body), 400)
    # The limit itself is allowed (checked in the pipeline, next to the draft-order limit).
    own = make_request()["prefetch"]
    body["prefetch"] = {**own, **{f"extra{i}": None for i in range(limit - len(own))}}
    assert client.post(PV, json=body).status_code == 200
    body["prefetch"]["one-too-many"] = None
    assert f"more than {limit} keys" in outcome(client.post(PV, json=body), 400)


def test_draft_order_with_a_non_string_resource_type_is_skipped(client, make_request):
    """Found by the fuzzer: a dict as resourceType in draftOrders raised TypeError (500)."""
    body = make_request("order-sign")
    body["context"]["draftOrders"]["entry"] = [
        {"resource": {"resourceType": {"x": 1}, "id": "a"}},
        {"resource": {"resourceType": ["MedicationRequest"], "id": "b"}},
    ]
    response = client.post(SIGN, json=body)
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}


def test_prefetch_resource_with_a_non_string_resource_type_is_skipped(client, make_request):
    body = make_request()
    body["prefetch"]["conditions"] = {
        "resourceType": "Bundle",
        "entry": [{"resource": {"resourceType": {"x": 1}}}, {"resource": {"resourceType": 7}}],
    }
    response = client.post(PV, json=body)
    assert response.status_code == 200


def _nest(levels: int) -> dict:
    deep: dict = {}
    node = deep
    for _ in range(levels):
        node["a"] = {}
        node = node["a"]
    return deep


def _scenario_body(name: str) -> tuple[dict, frozenset[str]]:
    scenario = load_scenario(name)
    service = scenario.service
    return scenario.hook_request(dict(service.prefetch)), scenario.expected_cards


def _rule_ids(response) -> set[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return {card["source"]["topic"]["code"] for card in response.get_json()["cards"]}


def test_deep_nesting_inside_prefetch_resources_is_never_walked(client):
    """Elements no rule reads may nest deeply: the models skip them, so the cards stand."""
    body, expected = _scenario_body("pv-many-findings")
    resources = [
        entry["resource"]
        for value in body["prefetch"].values()
        if isinstance(value, dict)
        for entry in value.get("entry", [])
    ]
    assert resources
    for resource in resources:
        resource["extension"] = [{"url": "urn:example:deep", "extension": [_nest(200)]}]
    assert _rule_ids(client.post(PV, json=body)) == expected


def test_deep_nesting_in_the_context_is_refused(client):
    body, _ = _scenario_body("pv-many-findings")
    body["context"]["extension"] = _nest(200)
    assert "nested deeper" in outcome(client.post(PV, json=body), 400)


def test_nesting_beyond_the_json_reader_is_refused_anywhere(client):
    """The reader writes the parsed value back out to count repeated names, and orjson stops at
    254 levels: deeper prefetch content is refused with a 400 that says so, never a 500."""
    body, _ = _scenario_body("pv-many-findings")
    entry = next(v for v in body["prefetch"].values() if isinstance(v, dict) and v.get("entry"))
    entry["entry"][0]["resource"]["extension"] = [{"url": "urn:example:deep", "x": _nest(300)}]
    assert "nested too deeply to read" in outcome(client.post(PV, json=body), 400)


def test_a_byte_order_mark_is_skipped_and_utf16_is_named(client):
    """RFC 8259 section 8.1: JSON between systems is UTF-8, and a reader may ignore a BOM."""
    body, expected = _scenario_body("pv-many-findings")
    text = json.dumps(body).encode("utf-8")
    response = client.post(PV, data=b"\xef\xbb\xbf" + text, content_type="application/json")
    assert _rule_ids(response) == expected
    answer = outcome(
        client.post(PV, data=json.dumps(body).encode("utf-16"), content_type="application/json"),
        400,
    )
    assert "must be UTF-8" in answer
