"""Sorting resources into a patient's record: whose they are."""

from __future__ import annotations

import pytest

from cds_service.fhir.record import belongs_to


@pytest.mark.parametrize(
    ("reference", "belongs"),
    [
        ("Patient/p1", True),
        ("https://ehr.example.org/fhir/Patient/p1", True),
        ("Patient/p1/_history/2", True),  # a version-specific reference, same patient
        ("https://ehr.example.org/fhir/Patient/p1/_history/7", True),
        ("Patient/p2", False),
        ("Patient/p2/_history/1", False),
        ("Patient/p1x", False),
        ("Patient/p1/other", False),
    ],
)
def test_whose_resource_it_is(reference, belongs):
    resource = {"resourceType": "Condition", "subject": {"reference": reference}}
    assert belongs_to(resource, "p1") is belongs
