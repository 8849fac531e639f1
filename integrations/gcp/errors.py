"""google-api-python-client's errors, translated into drbot's one exception tree at the provider boundary.

    googleapiclient HttpError / transport and auth errors
    ├── HTTP 429, 5xx, connection errors, timeouts        → TransientError (the engine retries)
    ├── HTTP 404 (an instance or operation is missing)     → PermanentError, or PreflightFailed for a read-only
    │                                                        check, naming the resource and the drbot.yml key
    ├── HTTP 403 (IAM refused)                             → PermanentError naming the permission and the role
    ├── no Application Default Credentials                 → PermanentError pointing at `gcloud auth`
    └── anything else the API refused (400, 409, …)        → PermanentError quoting Google's own message

Why a sentence per status: "HttpError 403 … returned 'The client is not authorized'" does not tell the on-call
engineer which role to grant. Google's messages go through `redact_text`, so nothing secret reaches a thread.
"""

from __future__ import annotations

import json
import socket
from contextlib import AbstractContextManager

from integrations.sdk_errors import map_sdk_errors, raised_by
from runbooks.errors import PermanentError, PreflightFailed, ProviderError, TransientError
from runbooks.redact import redact_text

ROLE = "roles/cloudsql.admin"
"""The predefined role that holds every permission drbot uses (clone, promoteReplica, delete, get, list)."""

_CONNECTION = ("ServerNotFoundError", "RelayError", "ProxiesUnavailableError", "HttpLib2Error", "TransportError")


def http_status(exc: BaseException) -> int:
    """The HTTP status of an HttpError (0 for anything else)."""
    resp = getattr(exc, "resp", None)
    try:
        return int(getattr(resp, "status", 0) or 0)
    except (TypeError, ValueError):
        return 0


def google_message(exc: BaseException) -> str:
    """Google's own `error.message` from the response body, redacted; "" when there is none."""
    content = getattr(exc, "content", b"")
    try:
        body = json.loads(content.decode("utf-8") if isinstance(content, bytes) else str(content))
        message = str(((body or {}).get("error") or {}).get("message") or "")
    except (ValueError, AttributeError):
        message = str(getattr(exc, "reason", "") or "")
    return redact_text(message).strip()


def translate(exc: Exception, *, provider: str, doing: str, subject: str = "", setting: str = "",
              permission: str = "", preflight: bool = False) -> ProviderError:
    """The drbot error for a failed Cloud SQL Admin call.

    `doing` says what drbot was doing ("describing Cloud SQL instance `prod`"); `subject` and `setting` name the
    resource and the drbot.yml key it came from; `permission` is the IAM permission the call needs.
    """
    if isinstance(exc, ProviderError):
        return exc
    status = http_status(exc)
    detail = google_message(exc)
    said = f" Google said: {detail}" if detail else ""
    kind = type(exc).__name__
    if status == 429:
        return TransientError(f"Cloud SQL throttled drbot while {doing} (HTTP 429); drbot retries with backoff.",
                              provider=provider, code="429")
    if status >= 500:
        return TransientError(f"Cloud SQL had a server-side error while {doing} (HTTP {status}); drbot retries "
                              f"with backoff.{said}", provider=provider, code=str(status))
    if kind == "DefaultCredentialsError":
        return PermanentError(f"No Google credentials while {doing}: run `gcloud auth application-default login`, "
                              "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run drbot "
                              "with an attached service account.", provider=provider, code=kind)
    if kind == "RefreshError":
        return PermanentError(f"Google refused to refresh drbot's credentials while {doing}; re-authenticate "
                              "(`gcloud auth application-default login`) or check the service account.",
                              provider=provider, code=kind)
    if not status and (kind in _CONNECTION or isinstance(exc, (OSError, socket.timeout, TimeoutError))):
        return TransientError(f"Could not reach the Cloud SQL Admin API while {doing} ({kind}); drbot retries "
                              "with backoff. Check the network or `endpoint_url` if this persists.",
                              provider=provider, code=kind)
    if status == 403:
        needs = f"`{permission}` (in {ROLE})" if permission else f"the permissions in {ROLE}"
        return PermanentError(f"Google Cloud IAM refused drbot while {doing} (HTTP 403): the identity drbot runs "
                              f"as needs {needs} on the project; grant it and retry.{said}", provider=provider,
                              code="403")
    error_type: type[ProviderError] = PreflightFailed if preflight else PermanentError
    if status == 404:
        name = f" `{subject}`" if subject else ""
        where = f"; check {setting} in drbot.yml or the step's parameters" if setting else ""
        return error_type(f"The Cloud SQL resource{name} does not exist (HTTP 404) — found while {doing}{where}.",
                          provider=provider, code="404")
    if status:
        return error_type(f"Cloud SQL refused while {doing} (HTTP {status}).{said}", provider=provider,
                          code=str(status))
    return PermanentError(f"Unexpected Google client error while {doing} ({kind}): {redact_text(str(exc))}",
                          provider=provider, code=kind)


def gcp_errors(*, provider: str, doing: str, subject: str = "", setting: str = "", permission: str = "",
               preflight: bool = False) -> AbstractContextManager[None]:
    """Wrap SDK calls so that only drbot errors leave the provider (`raise … from exc`)."""
    return map_sdk_errors(lambda exc: translate(exc, provider=provider, doing=doing, subject=subject,
                                                setting=setting, permission=permission, preflight=preflight),
                          sdk=_is_sdk_error)


def _is_sdk_error(exc: Exception) -> bool:
    """Google's and httplib2's errors and network failures are translated; bugs in drbot are not disguised."""
    return isinstance(exc, (OSError, TimeoutError)) or _GOOGLE(exc)


_GOOGLE = raised_by("googleapiclient", "google", "httplib2")
