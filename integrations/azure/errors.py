"""azure-core's errors, translated into drbot's one exception tree at the provider boundary.

    azure.core.exceptions.AzureError
    ├── HttpResponseError 429 / 5xx, ServiceRequestError,        → TransientError (the engine retries)
    │   ServiceResponseError (connection reset, timeout)
    ├── ResourceNotFoundError / 404 ResourceNotFound             → PermanentError, or PreflightFailed when the call
    │                                                               was a read-only check, naming the server and
    │                                                               the drbot.yml key it came from
    ├── ClientAuthenticationError (incl. azure-identity's         → PermanentError naming DefaultAzureCredential's
    │   CredentialUnavailableError), 401 / 403                      environment variables — never a token
    └── anything else ARM refused                                → PermanentError quoting ARM's own code and message

Why the environment variables are named: DefaultAzureCredential tries a chain of sources and its own message is a
page long; the thread needs the one line that tells the operator what to set. ARM messages go through
`redact_text`, so a bearer token or a connection string quoted by a proxy never reaches a thread.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from integrations.sdk_errors import map_sdk_errors, raised_by
from runbooks.errors import PermanentError, PreflightFailed, ProviderError, TransientError
from runbooks.redact import redact_text

CREDENTIAL_HINT = ("set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or AZURE_FEDERATED_TOKEN_FILE), "
                   "use a managed identity, or run `az login` — DefaultAzureCredential tries them in that order")
THROTTLED = frozenset({"TooManyRequests", "Throttled", "ThrottlingException", "SubscriptionRequestsThrottled",
                       "ResourceGroupRequestsThrottled", "ServerBusy"})
NOT_FOUND = frozenset({"ResourceNotFound", "ResourceGroupNotFound", "ServerNotExist", "ParentResourceNotFound",
                       "NotFound", "SubscriptionNotFound"})


def error_code(exc: BaseException) -> str:
    """ARM's error code (`ResourceNotFound`, `TooManyRequests`), else ""."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    return str(code or "")


def status_code(exc: BaseException) -> int:
    return int(getattr(exc, "status_code", None) or 0)


def _arm_message(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    text = getattr(error, "message", None) or ""
    return redact_text(str(text)).strip()


def translate(exc: Exception, *, provider: str, doing: str, subject: str = "", setting: str = "",
              preflight: bool = False) -> ProviderError:
    """The drbot error for a failed Azure call; `doing` and `subject`/`setting` make the sentence actionable."""
    if isinstance(exc, ProviderError):
        return exc
    kind = type(exc).__name__
    code, status = error_code(exc), status_code(exc)
    detail = _arm_message(exc)
    said = f" Azure said: {detail}" if detail else ""
    if kind in {"ClientAuthenticationError", "CredentialUnavailableError"} or status in {401, 403} \
            or code in {"AuthenticationFailed", "AuthorizationFailed", "InvalidAuthenticationToken"}:
        return PermanentError(f"Azure refused drbot's credentials while {doing} ({code or kind}); {CREDENTIAL_HINT}, "
                              "and grant that identity a role on the resource group.", provider=provider,
                              code=code or kind)
    if status == 429 or code in THROTTLED:
        return TransientError(f"Azure throttled drbot while {doing} ({code or 429}); drbot retries with backoff.",
                              provider=provider, code=code or "429")
    if status >= 500:
        return TransientError(f"Azure had a server-side error while {doing} ({code or status}); drbot retries with "
                              f"backoff.{said}", provider=provider, code=code or str(status))
    if kind in {"ServiceRequestError", "ServiceResponseError", "ServiceRequestTimeoutError",
                "ServiceResponseTimeoutError", "IncompleteReadError"}:
        return TransientError(f"Could not reach Azure Resource Manager while {doing} ({kind}); drbot retries with "
                              "backoff. Check the network or `endpoint_url` if this persists.", provider=provider,
                              code=kind)
    error_type: type[ProviderError] = PreflightFailed if preflight else PermanentError
    if code == "ResourceGroupNotFound":
        return error_type(f"The Azure resource group does not exist (ResourceGroupNotFound) — found while {doing}; "
                          "check `resource_group` (and `subscription`) in drbot.yml.", provider=provider, code=code)
    if status == 404 or code in NOT_FOUND or kind == "ResourceNotFoundError":
        name = f" `{subject}`" if subject else ""
        where = f"; check {setting} in drbot.yml or the step's parameters" if setting else ""
        return error_type(f"The Azure PostgreSQL flexible server{name} does not exist ({code or 'ResourceNotFound'})"
                          f" — found while {doing}{where}.", provider=provider, code=code or "ResourceNotFound")
    if code or status:
        return error_type(f"Azure refused while {doing} ({code or status}).{said}", provider=provider,
                          code=code or str(status))
    return PermanentError(f"Unexpected Azure client error while {doing} ({kind}): {redact_text(str(exc))}",
                          provider=provider, code=kind)


def azure_errors(*, provider: str, doing: str, subject: str = "", setting: str = "",
                 preflight: bool = False) -> AbstractContextManager[None]:
    """Wrap SDK calls so that only drbot errors leave the provider (`raise … from exc`)."""
    return map_sdk_errors(lambda exc: translate(exc, provider=provider, doing=doing, subject=subject,
                                                setting=setting, preflight=preflight), sdk=raised_by("azure"))
