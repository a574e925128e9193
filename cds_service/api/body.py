"""Read a JSON request body defensively: size, syntax, duplicate keys, nesting depth.

Flask's own ``get_json`` is lenient (it accepts duplicate keys, last one wins) and lets very deep
nesting reach Python's recursion limit. A CDS service reads patient data from strangers' EHRs,
so anything ambiguous is refused with a clear 400 before any code looks at it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from cds_service.api.errors import ApiError
from cds_service.api.large_bodies import wait_if_large
from cds_service.api.pruning_reader import PRUNE_ABOVE_BYTES, loads_pruned
from cds_service.strict_json import (
    MAX_DEPTH,
    MOST_PER_BYTE,
    REFUSALS,
    DuplicateKey,
    TooCostly,
    TooDeep,
    cost,
    loads,
)

logger = logging.getLogger("cds_service.api")


def _depth(value: Any, limit: int) -> bool:
    """True if containers nest at most ``limit`` levels deep.

    Walks one level at a time and only through containers (iterative: no recursion on hostile
    input; scalars, the bulk of a chart, are never pushed).
    """
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 1
    while level:
        if depth > limit:
            return False
        below: list[Any] = []
        for node in level:
            if type(node) is dict:
                node = node.values()
            below += [c for c in node if type(c) is dict or type(c) is list]
        level = below
        depth += 1
    return True


def read_json_object(request: Request, *, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """The body as a JSON object, or an ApiError (400, 413 or 415) saying what is wrong.

    The nesting limit is checked on the whole body (the JSON reader itself refuses more than
    :data:`~cds_service.strict_json.MAX_DEPTH` levels anywhere).
    """
    def parse(raw: bytes) -> tuple[Any, int]:
        _within_cost(raw, max_bytes)
        return loads(raw), 0

    return _read(request, max_bytes, max_depth, frozenset(), parse)[0]


def _within_cost(raw: bytes, max_bytes: int) -> None:
    """Refuse a text that would cost more than the cap once parsed (strict_json.cost). A byte
    is charged at most MOST_PER_BYTE, so only a text past that fraction of the cap is counted:
    the hot path, small bodies, is not."""
    if len(raw) * MOST_PER_BYTE > max_bytes and cost(raw) > max_bytes:
        raise TooCostly("over the cap")


def read_hook_body(
    request: Request, *, max_bytes: int, max_depth: int, keep_entry: Callable[[Any], bool]
) -> tuple[dict[str, Any], int]:
    """A hook call's body as :func:`read_json_object` reads it, and the prefetch Bundle entries
    dropped because ``keep_entry`` refused them (only in bodies above
    :data:`~cds_service.api.pruning_reader.PRUNE_ABOVE_BYTES`; see that module for why).
    The nesting limit applies to every member but ``prefetch``: nothing reads that
    recursively, only at fixed paths, so its nesting cannot hurt.
    """

    def parse(raw: bytes) -> tuple[Any, int]:
        if len(raw) > PRUNE_ABOVE_BYTES:
            return loads_pruned(raw, keep_entry, max_cost=max_bytes)
        _within_cost(raw, max_bytes)
        return loads(raw), 0

    return _read(request, max_bytes, max_depth, frozenset({"prefetch"}), parse)


def _read(
    request: Request,
    max_bytes: int,
    max_depth: int,
    unwalked: frozenset[str],
    parse: Callable[[bytes], tuple[Any, int]],
) -> tuple[dict[str, Any], int]:
    mimetype = request.mimetype or ""
    if mimetype not in ("application/json", "application/fhir+json") and not mimetype.endswith(
        "+json"
    ):
        raise ApiError(
            415,
            "The request body must be JSON (Content-Type: application/json).",
            code="not-supported",
        )
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, f"The request body exceeds {max_bytes} bytes.", code="too-costly")
    # A body without Content-Length (chunked) is read up to the request's limit, not the app's:
    # one byte over this reader's cap, so that a longer one is told apart and refused (413).
    request.max_content_length = max_bytes + 1
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise  # a 413 (a chunked body past the cap)
    except (ParseException, OSError, ClientDisconnected) as error:
        # The server's reader failed: a malformed chunked body (gunicorn's InvalidChunkSize,
        # ChunkMissingTerminator, ...) or a client that stopped mid-body (gunicorn's
        # NoMoreData, which werkzeug may report as ClientDisconnected). The client's fault;
        # anything else is ours and stays a 500.
        logger.warning("request body unreadable", extra={"error": type(error).__name__})
        raise ApiError(
            400,
            "The request body could not be read: its chunked transfer coding is malformed, or it "
            "ended before it was complete.",
        ) from None
    if len(raw) > max_bytes:
        raise ApiError(413, f"The request body exceeds {max_bytes} bytes.", code="too-costly")
    wait_if_large(len(raw))
    try:
        body, dropped = parse(raw)
    except TooCostly:
        raise ApiError(
            413,
            f"The request body holds too many JSON values for its {max_bytes}-byte size cap: "
            f"each comma, bracket and brace is charged against it as well as its bytes.",
            code="too-costly",
        ) from None
    except DuplicateKey as dup:
        raise ApiError(400, f"The JSON body repeats the key {str(dup)[:64]!r}.") from None
    except TooDeep:  # the reader's own limit, far beyond ours, reached anywhere in the body
        raise ApiError(
            400, f"The JSON body is nested too deeply to read (more than {MAX_DEPTH} levels)."
        ) from None
    except REFUSALS as exc:  # only the reader's: whatever else a part raises is a bug of ours
        raise ApiError(400, f"The request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        if not _depth(body, max_depth):
            raise ApiError(400, f"The JSON body is nested deeper than {max_depth} levels.")
        raise ApiError(400, "The request body must be a JSON object.")
    walked = {k: v for k, v in body.items() if k not in unwalked} if unwalked else body
    if not _depth(walked, max_depth):
        raise ApiError(400, f"The JSON body is nested deeper than {max_depth} levels.")
    return body, dropped
