"""Schemathesis against the served OpenAPI document, in process (WSGI), auth off.

Every operation gets schema-valid and schema-violating requests (hypothesis-generated bodies,
boundary values, wrong media types, unexpected methods). Checks on every answer:

* no 5xx (``not_a_server_error``);
* the status code and content type are documented, and the body matches the documented schema
  (``status_code_conformance``, ``content_type_conformance``, ``response_schema_conformance``);
* our own invariant: an error answer is an OperationOutcome, never a stack trace.

Not checked: ``negative_data_rejection`` (schema-violating data must get a 4xx). The request
models are deliberately more lenient than the document in harmless ways (``"entry": {}`` in a
prefetched Bundle reads as no entries, ``display: null`` in a Coding as no display), because
real CDS clients send such things; the document describes what a client *should* send.
"""

from __future__ import annotations

import schemathesis
from hypothesis import settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.fuzz_app import APP, COVERAGE_FROM_EXAMPLES, EXAMPLES, FUZZ_SETTINGS, TALLY
from tests.reliability.support import check_answer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _auth_off_document() -> dict:
    # The served document, minus the JWT requirement: this app runs with CDS_AUTH=off.
    document = APP.test_client().get("/openapi.json").get_json()
    for item in document["paths"].values():
        for operation in item.values():
            operation.pop("security", None)
    return document


schema = schemathesis.openapi.from_dict(_auth_off_document())
schema.app = APP
# The coverage phase (boundary values, missing members, unexpected methods: ~1,400 requests
# whatever max_examples says) is for the fuzz runs; the quick suite only samples.
schema.config.phases.coverage.enabled = EXAMPLES >= COVERAGE_FROM_EXAMPLES


@schema.parametrize()
@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
def test_openapi_operations(case):
    TALLY.source = "schemathesis"
    response = case.call()
    case.validate_response(response, checks=CHECKS)
    check_answer(response.status_code, response.content)  # bodies of 2xx: checked above
