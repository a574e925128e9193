"""Read an HTTP response body as it arrives, so that its reader can stop on time.

The socket timeout of ``requests`` applies to each read, so a server dripping a byte at a time
could hold a reader far beyond it; ``iter_content`` also blocks until a whole chunk has arrived.
``read1`` returns whatever one socket read delivered, so the caller's elapsed-time check runs
after every read. Used by the FHIR client and the JWT key-set fetcher, which map the transport
errors to their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import requests
from urllib3.response import BaseHTTPResponse

CHUNK = 64 * 1024


def pieces(response: requests.Response) -> Iterator[bytes]:
    """The decoded body, a socket read at a time (``stream=True`` responses)."""
    raw = response.raw
    if isinstance(raw, BaseHTTPResponse):
        while chunk := raw.read1(CHUNK, decode_content=True):
            yield chunk
    else:  # a custom adapter without urllib3 underneath
        yield from response.iter_content(chunk_size=CHUNK)
