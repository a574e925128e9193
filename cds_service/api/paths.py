"""Serve a path with doubled slashes as it is meant, without a redirect.

The CDS Hooks sandbox names each service ``${discoveryUrl}/${id}``, so a discovery URL entered
with a trailing slash makes every service URL ``.../cds-services//<id>``, and its JWT ``aud`` the
same (shared notes: "Discovery handling"). Werkzeug would answer such a path with a 308 redirect
to the single-slash URL, an HTML page that a browser's CORS preflight does not follow. So runs
of slashes are collapsed before routing, and the path as requested is kept for the audience
check (:func:`requested_path`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import Request

_SLASHES = re.compile(r"/{2,}")
_REQUESTED = "cds.requested_path"


class CollapseSlashes:
    """WSGI middleware: ``PATH_INFO`` with every run of slashes made one."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ[_REQUESTED] = path
            environ["PATH_INFO"] = _SLASHES.sub("/", path)
        return self.app(environ, start_response)


def requested_path(request: Request) -> str:
    """The path the client asked for, before :class:`CollapseSlashes` (its JWT's ``aud``)."""
    return request.environ.get(_REQUESTED, request.path)
