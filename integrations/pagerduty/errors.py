"""PagerDuty client errors → drbot's one exception tree, at the provider boundary.

    pagerduty / httpx2                              drbot
    HttpError 429, 5xx (ServerHttpError)            TransientError   retried by `retrying` with backoff first
    Error without a response, TransportError        TransientError   (network: connect, timeout)
    ... caused by CERTIFICATE_VERIFY_FAILED         PermanentError   names drbot.yml `ca_bundle`
    HttpError 401                                   PermanentError   names PAGERDUTY_API_TOKEN
    HttpError 403                                   PermanentError   names PAGERDUTY_API_TOKEN (read-only key?)
    HttpError 400 about the `From` user             PermanentError   names PAGERDUTY_FROM_EMAIL
    HttpError 404                                   PermanentError   names the incident id to check
    HttpError other 4xx                             PermanentError   with PagerDuty's own `error.errors` words
    UrlError                                        ConfigError      PAGERDUTY_API_URL must be https://

Messages are built from the status and PagerDuty's JSON error body, never from the SDK's exception text (its 401
message quotes the end of the key); the token is scrubbed from everything as a second guard.
"""

from __future__ import annotations

import json
from typing import Any

from runbooks.errors import ConfigError, DrbotError, PermanentError, TransientError

KIND = "pagerduty"
MASK = "«redacted»"
TOKEN_ENV = "PAGERDUTY_API_TOKEN"
FROM_ENV = "PAGERDUTY_FROM_EMAIL"
URL_ENV = "PAGERDUTY_API_URL"
DEFAULT_API_URL = "https://api.pagerduty.com"


def scrub(text: str, *, secret: str | None) -> str:
    return text.replace(secret, MASK) if secret else text


def pd_said(response: Any) -> str:
    """PagerDuty's error body is `{"error": {"message", "code", "errors": [...]}}`; join its words."""
    try:
        body: Any = json.loads(response.content)
    except (ValueError, UnicodeDecodeError, AttributeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        parts = [str(error.get("message") or "").strip()]
        parts += [str(e) for e in error.get("errors") or [] if str(e).strip()]
        code = f" (code {error['code']})" if error.get("code") is not None else ""
        return "; ".join(p for p in parts if p) + code
    text = str(getattr(response, "text", "") or "").strip()
    return text[:200] or "no details"


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a pagerduty.HttpError, None for network errors."""
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def retry_after(exc: BaseException) -> float | None:
    """Seconds from a `Retry-After` header (PagerDuty sends whole seconds), None when absent or unreadable."""
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("retry-after") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def is_retryable(exc: BaseException) -> bool:
    status = status_of(exc)
    if status is None:
        return _is_network(exc) and not _untrusted(exc)
    return status == 429 or status >= 500


def translate(exc: BaseException, *, doing: str, incident: str | None, token: str | None,
              api_url: str) -> DrbotError:
    """Map one client exception; `doing` says what drbot was attempting, e.g. "resolving incident `Q1`"."""
    from pagerduty import UrlError

    if isinstance(exc, UrlError):
        return ConfigError(f"{URL_ENV} must be an https:// address such as {DEFAULT_API_URL}; got {api_url!r}.")
    status = status_of(exc)
    if status is None:
        if _untrusted(exc):
            return PermanentError(f"drbot does not trust the TLS certificate of {api_url} while {doing}; if a "
                                  "proxy or private CA signs it, set `ca_bundle:` (a PEM file) on the pagerduty "
                                  "resource in drbot.yml.", provider=KIND, code="CertificateVerifyFailed")
        if _is_network(exc):
            return TransientError(f"PagerDuty at {api_url} is unreachable while {doing} ({type(exc).__name__}); "
                                  f"check the network and {URL_ENV}.", provider=KIND, code="Unreachable")
        return PermanentError(f"PagerDuty call failed while {doing}: {type(exc).__name__}: "
                              f"{scrub(str(exc), secret=token)[:200]}", provider=KIND, code="Unexpected")
    said = scrub(pd_said(getattr(exc, "response", None)), secret=token)
    if status == 429 or status >= 500:
        return TransientError(f"PagerDuty answered {status} while {doing}: {said}.", provider=KIND,
                              code=str(status))
    if status == 401:
        return PermanentError(f"PagerDuty refused the API token (401) while {doing}: {said}. Set {TOKEN_ENV} to a "
                              "valid REST API key (PagerDuty → Integrations → API Access Keys).", provider=KIND,
                              code="401")
    if status == 403:
        return PermanentError(f"PagerDuty denied {doing} (403): {said}. The key in {TOKEN_ENV} may be read-only; "
                              "use a full-access REST API key.", provider=KIND, code="403")
    if status == 400 and _about_from(said):
        return PermanentError(f"PagerDuty refused {doing} (400): {said}. Set {FROM_ENV} to the email address of "
                              "a PagerDuty user in this account, e.g. sre-bot@example.com.", provider=KIND,
                              code="400")
    if status == 404 and incident:
        return PermanentError(f"PagerDuty has no incident `{incident}` (404) while {doing}: {said}. Check the "
                              "incident id (the one in the incident's URL, e.g. Q1ABCDEFGHIJKL) and that "
                              f"{TOKEN_ENV} belongs to the same account.", provider=KIND, code="404")
    return PermanentError(f"PagerDuty refused {doing} ({status}): {said}.", provider=KIND, code=str(status))


def _about_from(said: str) -> bool:
    lowered = said.lower()
    return '"from"' in lowered or "from header" in lowered or "requester user" in lowered


def _untrusted(exc: BaseException) -> bool:
    """A TLS handshake refused for the certificate: retrying cannot help, the trust settings must change."""
    return _is_network(exc) and "CERTIFICATE_VERIFY_FAILED" in f"{exc} {exc.__cause__}"


def _is_network(exc: BaseException) -> bool:
    from httpx2 import TransportError

    if isinstance(exc, TransportError | TimeoutError | ConnectionError):
        return True
    cause = exc.__cause__
    return cause is not None and isinstance(cause, TransportError | TimeoutError | ConnectionError)
