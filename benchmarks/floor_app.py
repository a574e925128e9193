"""The "floor": the least any Flask service can do with the same request, for comparison.

It parses the request JSON (as a bare Flask view would, with ``request.get_json()``) and answers
with a fixed JSON body of exactly ``FLOOR_RESPONSE_BYTES`` bytes, the size of the real service's
answer. Served by gunicorn with the same workers and threads as the service, its requests/s are
the ceiling the service is measured against: what remains between the two is our own work.
``GET /readyz`` answers 200, so that it is started and waited for like the service.
"""

from __future__ import annotations

import os

from flask import Flask, Response, abort, request

_HEAD, _TAIL = b'{"cards":[{"summary":"', b'"}]}'


def payload(size: int) -> bytes:
    """A valid JSON body of exactly ``size`` bytes (at least 26)."""
    return _HEAD + b"x" * max(0, size - len(_HEAD) - len(_TAIL)) + _TAIL


def create_floor_app(response_bytes: int) -> Flask:
    app = Flask(__name__)
    body = payload(response_bytes)

    @app.post("/cds-services/<service_id>")
    def call(service_id: str) -> Response:
        if not isinstance(request.get_json(), dict):
            abort(400)
        return Response(body, mimetype="application/json")

    @app.get("/readyz")
    def ready() -> str:  # what ServedProcess waits for, as it does for the service
        return "ready"

    return app


app = create_floor_app(int(os.environ.get("FLOOR_RESPONSE_BYTES", "2048")))
