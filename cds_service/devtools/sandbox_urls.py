"""The CDS Hooks sandbox URL for each fixture patient, for the README's appendix.

The sandbox takes its FHIR server, patient and discovery URL from query parameters
(``fhirServiceUrl``, ``patientId``, ``serviceDiscoveryURL``). The defaults match
``docker-compose.yml``: sandbox on 8081, HAPI on 8080, the service on 8000.
Regenerate the appendix with ``python -m cds_service.devtools.sandbox_urls --write README.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlencode

from cds_service.devtools.scenarios import list_patients

START = "<!-- sandbox-urls:start -->"
END = "<!-- sandbox-urls:end -->"


def sandbox_url(
    patient_id: str,
    *,
    sandbox: str = "http://localhost:8081/",
    fhir: str = "http://localhost:8080/fhir",
    discovery: str = "http://localhost:8000/cds-services",
) -> str:
    query = urlencode(
        {"fhirServiceUrl": fhir, "patientId": patient_id, "serviceDiscoveryURL": discovery}
    )
    return f"{sandbox}?{query}"


def appendix() -> str:
    lines = [START, "", "| fixture patient | sandbox URL |", "|---|---|"]
    lines += [f"| `{p}` | <{sandbox_url(p)}> |" for p in list_patients()]
    return "\n".join([*lines, "", END])


def rewrite(readme: str) -> str:
    """``readme`` with the text between the markers replaced by the current appendix."""
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return head + appendix() + tail


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        path = Path(sys.argv[2])
        path.write_text(rewrite(path.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(appendix())
