"""The one app every fuzz test hits, and the tally of what it answered.

One app for the whole fuzz session on purpose: the last test (``test_fuzz_zz_afterwards.py``)
checks that the *same* app, after thousands of hostile requests, still answers the known
scenarios correctly and that its own /metrics saw no 5xx.

The budget comes from the environment so that one set of tests serves three purposes:
``make test`` (a few examples, seconds), CI (a few hundred requests), ``make fuzz`` (>= 5,000).

* ``CDS_FUZZ_EXAMPLES``: hypothesis ``max_examples`` per schemathesis operation; the FHIR
  payload tests scale from it (default 8). From 25 on, schemathesis' coverage phase runs too
  (about 1,400 deterministic boundary-value requests).
* ``CDS_FUZZ_MIN_REQUESTS``: the last test fails if fewer requests were sent (default 0).
* ``CDS_FUZZ_REPORT``: write the tally as JSON to this file.

Auth is off and the FHIR server allowlist is empty, so no generated request can make the
service call out anywhere (a missing prefetch key is answered with 412).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings

from cds_service import create_app
from cds_service.settings import Settings

EXAMPLES = int(os.environ.get("CDS_FUZZ_EXAMPLES", "8"))
MIN_REQUESTS = int(os.environ.get("CDS_FUZZ_MIN_REQUESTS", "0"))
REPORT = os.environ.get("CDS_FUZZ_REPORT")
COVERAGE_FROM_EXAMPLES = 25  # schemathesis' deterministic coverage phase runs from this budget

# Deterministic unless asked: the quick suite and CI replay the same examples (a red CI must mean
# a change broke something), while `make fuzz` explores new ones (CDS_FUZZ_RANDOM=1).
RANDOM = os.environ.get("CDS_FUZZ_RANDOM") == "1"

FUZZ_SETTINGS = settings(
    derandomize=not RANDOM,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the work tree
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


class Tally:
    """WSGI middleware counting answers by source (which test family) and status."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app
        self.by_status: Counter[int] = Counter()
        self.by_source: Counter[str] = Counter()
        self.source = "other"
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        def counting_start_response(status: str, headers: list, exc_info: Any = None) -> Any:
            with self._lock:
                self.by_status[int(status.split(" ", 1)[0])] += 1
                self.by_source[self.source] += 1
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, counting_start_response)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.total,
            "by_source": dict(sorted(self.by_source.items())),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "server_errors": sum(v for k, v in self.by_status.items() if k >= 500),
            "examples_setting": EXAMPLES,
        }


_workdir = tempfile.mkdtemp(prefix="cds-fuzz-")
atexit.register(shutil.rmtree, _workdir, True)

APP = create_app(
    Settings(
        auth="off",
        database_url=f"sqlite:///{_workdir}/fuzz.sqlite3",
        fhir_server_allowlist=(),
        # Bodies at and just past the cap are among the generated ones: a cap of 1 MiB keeps
        # each such example cheap (the default, 32 MiB, would make every one 32 MB).
        max_body_bytes=1024 * 1024,
    )
)
TALLY = Tally(APP.wsgi_app)
APP.wsgi_app = TALLY  # type: ignore[method-assign]
