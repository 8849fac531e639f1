"""Qdrant client errors → drbot's one exception tree, at the provider boundary.

    qdrant_client exception                         drbot
    ResponseHandlingException (connect, timeout)    TransientError   the engine retries with backoff
    ResourceExhaustedResponse (429 + Retry-After)   TransientError
    UnexpectedResponse 429, 5xx                     TransientError
    UnexpectedResponse 401/403                      PermanentError   names the env var that holds the key
    UnexpectedResponse other 4xx                    PermanentError   with Qdrant's own `status.error` text
    ResponseHandlingException (bad response body)   PermanentError   the server is not the Qdrant we expect

Messages carry the server's host and Qdrant's words, never the API key (it is scrubbed even if Qdrant echoes it).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from runbooks.errors import PermanentError, ProviderError, TransientError

KIND = "qdrant"
MASK = "«redacted»"


def display_url(url: str) -> str:
    """The server address without any user:password part, safe for a thread message."""
    parts = urlsplit(url)
    host = parts.hostname or url
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}" if parts.scheme else url


def scrub(text: str, *, secret: str | None) -> str:
    return text.replace(secret, MASK) if secret else text


def qdrant_message(content: bytes) -> str:
    """Qdrant's error body is `{"status": {"error": "..."}}`; fall back to the raw text, shortened."""
    try:
        body: Any = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        status = body.get("status")
        if isinstance(status, dict) and status.get("error"):
            return str(status["error"])
    text = content.decode("utf-8", "replace").strip()
    return text[:200] or "no details"


def translate(exc: Exception, *, doing: str, url: str, api_key: str | None,
              api_key_env: str | None) -> ProviderError:
    """Map one client exception; `doing` says what drbot was attempting, e.g. "listing snapshots of `docs`"."""
    from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    where = display_url(url)
    if isinstance(exc, ResourceExhaustedResponse):
        return TransientError(f"Qdrant at {where} is throttling requests while {doing} (retry after "
                              f"{exc.retry_after_s} s).", provider=KIND, code="429")
    if isinstance(exc, UnexpectedResponse):
        code = exc.status_code or 0
        said = scrub(qdrant_message(exc.content), secret=api_key)
        if code == 429 or code >= 500:
            return TransientError(f"Qdrant at {where} answered {code} while {doing}: {said}", provider=KIND,
                                  code=str(code))
        if code in (401, 403):
            hint = (f"check the key in the environment variable {api_key_env}" if api_key_env else
                    "set `api_key_env` for this resource in drbot.yml to the name of an environment variable "
                    "holding the key")
            return PermanentError(f"Qdrant at {where} refused drbot's credentials ({code}) while {doing}: {said}; "
                                  f"{hint}.", provider=KIND, code=str(code))
        return PermanentError(f"Qdrant at {where} refused {doing} ({code}): {said}", provider=KIND,
                              code=str(code))
    if isinstance(exc, ResponseHandlingException):
        source = exc.source
        if _is_transport(source):
            return TransientError(f"Qdrant at {where} is unreachable while {doing} ({type(source).__name__}); "
                                  "check the server is up and `url` in drbot.yml.", provider=KIND,
                                  code="Unreachable")
        return PermanentError(f"Qdrant at {where} sent a response drbot could not read while {doing} "
                              f"({type(source).__name__}); is `url` a Qdrant REST endpoint (port 6333)?",
                              provider=KIND, code="BadResponse")
    if _is_transport(exc):
        return TransientError(f"Qdrant at {where} is unreachable while {doing} ({type(exc).__name__}).",
                              provider=KIND, code="Unreachable")
    return PermanentError(f"Qdrant call failed while {doing}: {type(exc).__name__}: "
                          f"{scrub(str(exc), secret=api_key)[:200]}", provider=KIND, code="Unexpected")


def _is_transport(exc: BaseException) -> bool:
    import httpx

    return isinstance(exc, httpx.TransportError | TimeoutError | ConnectionError)
