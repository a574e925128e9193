"""Liveness and readiness for load balancers and orchestrators.

``/healthz`` answers while the process serves requests. ``/readyz`` also checks that the knowledge
files loaded and the database is writable, so a replica that cannot store feedback is taken out
of rotation instead of losing it.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    state = current_app.extensions["cds"]
    checks = {
        "knowledge": bool(state.knowledge.thresholds),
        "database": state.store.writable(),
    }
    ready = all(checks.values())
    response = jsonify({"status": "ready" if ready else "not-ready", "checks": checks})
    response.status_code = 200 if ready else 503
    return response
