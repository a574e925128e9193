"""CDS Hooks 2.0 request bodies as pydantic models (service calls and feedback).

Validation is strict where the standard is (required fields, ``context.userId`` among them,
hookInstance a UUID, the patient id a FHIR id, ``expires_in`` an integer, ``fhirServer``
required with ``fhirAuthorization``, ``selections`` of the form ``Type/id``, ``extension`` an
object) and lenient where real clients differ (unknown fields and ``extension`` are kept,
``draftOrders`` without ``Bundle.type`` as the public sandbox sends it). Members a hook does not
define (``draftOrders`` in a patient-view context, ``selections`` in order-sign) are kept and
never read.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cds_service.analytics import parse_instant
from cds_service.fhir.models import FHIR_ID, ID_CHARACTERS

REFERENCE = rf"^[A-Za-z]+/{ID_CHARACTERS}$"
# context.userId: "Type/id", the type one the hooks name (patient-view: any of the four; the
# order hooks: Practitioner or PractitionerRole, accepted from the same list).
USER_ID = rf"^(Practitioner|PractitionerRole|Patient|RelatedPerson)/{ID_CHARACTERS}$"
# fhirAuthorization.access_token goes into an "Authorization: Bearer" header, so it must be
# what a header can carry: visible ASCII, no spaces. Anything else (non-ASCII, spaces, CR/LF)
# could not be sent, and failed the FHIR fallback as a 412 "internal-error". Not RFC 6750's
# stricter b64token: real opaque tokens hold "!" (Salesforce) and the like, and a token the
# call never uses (complete prefetch) must not fail it.
BEARER_TOKEN = r"^[\x21-\x7e]+$"


def problems(exc: ValidationError, under: str = "") -> list[tuple[str, str]]:
    """(where, message) for each problem pydantic found: ``where`` is the member's dotted path
    under ``under`` ("" when the problem is the validated object itself)."""
    prefix = [under] if under else []
    return [
        (".".join([*prefix, *map(str, err["loc"])]), err["msg"])
        for err in exc.errors(include_url=False)
    ]


def _json_integer(value: Any) -> Any:
    """A JSON integer (``300``, or ``300.0``, which JSON Schema counts as one), never the string
    ``"300"`` or ``true`` that lax validation would turn into one."""
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is not int:
        raise ValueError("must be an integer")
    return value


JsonInteger = Annotated[int, BeforeValidator(_json_integer)]


class _Open(BaseModel):
    """Unknown members are allowed (the standard's ``extension`` and future fields)."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=False)


class _CdsObject(_Open):
    """A CDS Hooks object: its ``extension``, where present, is a JSON object (CDS Hooks 2.0
    "Extensions"). Not for the FHIR structures inside one (``draftOrders``), whose ``extension``
    is FHIR's array."""

    # Absent is fine (the default is not validated); present, it must be an object, not null.
    extension: dict[str, Any] = Field(default=None)  # type: ignore[assignment]


class FhirAuthorization(_CdsObject):
    access_token: str = Field(pattern=BEARER_TOKEN)
    token_type: Literal["Bearer"]
    expires_in: JsonInteger = Field(ge=0)
    scope: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    patient: str | None = None

    @field_validator("token_type", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        """CDS Hooks fixes "Bearer", but RFC 6749 (section 5.1) reads token types in any case,
        and EHRs pass on what their authorization server wrote ("bearer")."""
        return "Bearer" if isinstance(value, str) and value.lower() == "bearer" else value


class BundleEntry(_Open):
    resource: dict[str, Any] | None = None


class DraftOrders(_Open):
    resourceType: Literal["Bundle"]
    entry: list[BundleEntry] = Field(default_factory=list)

    def resources(self) -> list[dict[str, Any]]:
        return [e.resource for e in self.entry if e.resource is not None]


class Context(_CdsObject):
    userId: str = Field(pattern=USER_ID)  # REQUIRED by all three hooks
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


_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


class HookRequest(_CdsObject):
    hook: str = Field(min_length=1)
    hookInstance: str
    fhirServer: str | None = Field(default=None, min_length=1)
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None

    @field_validator("hookInstance")
    @classmethod
    def _uuid(cls, value: str) -> str:
        # The canonical 36-character form only: uuid.UUID() also takes "urn:uuid:", braces
        # and any number of hyphens, so a megabyte of them passed, into every log line.
        if not _CANONICAL_UUID.fullmatch(value):
            raise ValueError("hookInstance must be a UUID (8-4-4-4-12 hexadecimal digits)")
        return value

    @model_validator(mode="after")
    def _server_with_token(self) -> HookRequest:
        if self.fhirAuthorization is not None and not self.fhirServer:
            raise ValueError("fhirServer is required when fhirAuthorization is present")
        return self


class OverrideReason(_CdsObject):
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


class AcceptedSuggestion(_CdsObject):
    id: str = Field(min_length=1)


def _holds_nul(value: Any) -> bool:
    """True if a string anywhere in the JSON value holds U+0000 (in a key or a value)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


class FeedbackEntry(_CdsObject):
    card: str = Field(min_length=1, max_length=128)
    outcome: Literal["accepted", "overridden"]
    outcomeTimestamp: str = Field(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
    )
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        """Every string of an entry is stored; PostgreSQL text cannot hold U+0000, and a
        database error would tell the EHR to retry a batch that can never be stored."""
        if _holds_nul(data):
            raise ValueError("feedback text must not contain the NUL character (U+0000)")
        return data

    @field_validator("outcomeTimestamp")
    @classmethod
    def _an_instant(cls, value: str) -> str:
        """The pattern checks the shape; this, that the date and time exist (not 30 February)."""
        try:
            parse_instant(value)  # as the feedback report reads it
        except ValueError:
            raise ValueError("outcomeTimestamp is not a real date and time") from None
        return value

    @model_validator(mode="after")
    def _accepted_has_suggestions(self) -> FeedbackEntry:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("acceptedSuggestions is required when the outcome is accepted")
        return self


class FeedbackRequest(_CdsObject):
    feedback: list[FeedbackEntry] = Field(min_length=1, max_length=1000)
