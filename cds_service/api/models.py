"""CDS Hooks 2.0 request bodies as pydantic models (service calls and feedback).

Validation is strict where the standard is (required fields, hookInstance a UUID, the patient id a
FHIR id, ``fhirServer`` required with ``fhirAuthorization``, ``selections`` of the form
``Type/id``) and lenient where real clients differ (unknown fields and ``extension`` are kept,
``draftOrders`` without ``Bundle.type`` as the public sandbox sends it).
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cds_service.fhir.models import FHIR_ID, ID_CHARACTERS

REFERENCE = rf"^[A-Za-z]+/{ID_CHARACTERS}$"


def problems(exc: ValidationError, under: str = "") -> list[tuple[str, str]]:
    """(where, message) for each problem pydantic found: ``where`` is the member's dotted path
    under ``under`` ("" when the problem is the validated object itself)."""
    prefix = [under] if under else []
    return [
        (".".join([*prefix, *map(str, err["loc"])]), err["msg"])
        for err in exc.errors(include_url=False)
    ]


class _Open(BaseModel):
    """Unknown members are allowed (the standard's ``extension`` and future fields)."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=False)


class FhirAuthorization(_Open):
    access_token: str = Field(min_length=1)
    token_type: Literal["Bearer"]
    expires_in: int = Field(ge=0)
    scope: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    patient: str | None = None


class BundleEntry(_Open):
    resource: dict[str, Any] | None = None


class DraftOrders(_Open):
    resourceType: Literal["Bundle"]
    entry: list[BundleEntry] = Field(default_factory=list)

    def resources(self) -> list[dict[str, Any]]:
        return [e.resource for e in self.entry if e.resource is not None]


class Context(_Open):
    userId: str | None = None
    patientId: str = Field(pattern=FHIR_ID)
    encounterId: str | None = None


class PatientViewContext(Context):
    pass


class OrderSignContext(Context):
    draftOrders: DraftOrders


class OrderSelectContext(OrderSignContext):
    selections: list[str] = Field(min_length=1)

    @field_validator("selections")
    @classmethod
    def _references(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if not re.match(REFERENCE, s)]
        if bad:
            raise ValueError("each selection must be a reference of the form 'Type/id'")
        return value


CONTEXTS: dict[str, type[Context]] = {
    "patient-view": PatientViewContext,
    "order-sign": OrderSignContext,
    "order-select": OrderSelectContext,
}


class HookRequest(_Open):
    hook: str = Field(min_length=1)
    hookInstance: str
    fhirServer: str | None = Field(default=None, min_length=1)
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None

    @field_validator("hookInstance")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            uuid.UUID(value)
        except (ValueError, AttributeError, TypeError):
            raise ValueError("hookInstance must be a UUID") from None
        return value

    @model_validator(mode="after")
    def _server_with_token(self) -> HookRequest:
        if self.fhirAuthorization is not None and not self.fhirServer:
            raise ValueError("fhirServer is required when fhirAuthorization is present")
        return self


class OverrideReason(_Open):
    reason: dict[str, Any] | None = None
    userComment: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> OverrideReason:
        if self.reason is None and not self.userComment:
            raise ValueError("overrideReason needs a reason or a userComment")
        if self.reason is not None and not (
            all(isinstance(self.reason.get(k), str) and self.reason[k] for k in ("system", "code"))
            and isinstance(self.reason.get("display"), str | None)
        ):  # strings only: they are stored as columns (a list here once caused a 500)
            raise ValueError("overrideReason.reason must be a Coding with system and code")
        return self


class AcceptedSuggestion(_Open):
    id: str = Field(min_length=1)


class FeedbackEntry(_Open):
    card: str = Field(min_length=1, max_length=128)
    outcome: Literal["accepted", "overridden"]
    outcomeTimestamp: str = Field(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
    )
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None

    @model_validator(mode="after")
    def _accepted_has_suggestions(self) -> FeedbackEntry:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("acceptedSuggestions is required when the outcome is accepted")
        return self


class FeedbackRequest(_Open):
    feedback: list[FeedbackEntry] = Field(min_length=1, max_length=1000)
