"""botocore's errors, translated into drbot's one exception tree at the provider boundary.

    botocore ClientError / BotoCoreError
    ├── throttling codes, HTTP 5xx, connection errors, timeouts   → TransientError (the engine retries)
    ├── a named resource that does not exist (DBInstanceNotFound,  → PermanentError, or PreflightFailed when the
    │   NoSuchHostedZone, NoSuchBucket)                               call was a read-only check, with a sentence
    │                                                                 that names the resource and the setting
    ├── credentials missing, expired or refused                   → PermanentError pointing at the credential chain
    └── anything else the API refused                             → PermanentError quoting AWS's own message

Why a sentence per code: at 3 a.m. "An error occurred (DBInstanceNotFound)" is not enough; the thread should say
which instance, where it was configured and what to do. AWS messages are passed through `redact_text`, so an
access key id quoted in an error never reaches a thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager

from integrations.sdk_errors import map_sdk_errors, raised_by
from runbooks.errors import PermanentError, PreflightFailed, ProviderError, TransientError
from runbooks.redact import redact_text

THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded", "TooManyRequestsException",
    "RequestThrottled", "RequestThrottledException", "SlowDown", "PriorRequestNotComplete",
    "ProvisionedThroughputExceededException", "BandwidthLimitExceeded", "EC2ThrottledException",
})
SERVER_SIDE = frozenset({"InternalFailure", "InternalError", "InternalServiceError", "ServiceUnavailable",
                         "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException"})
CREDENTIALS = frozenset({"AccessDenied", "AccessDeniedException", "UnrecognizedClientException",
                         "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch",
                         "AuthFailure", "InvalidAccessKeyId"})
NOT_FOUND = {
    "DBInstanceNotFound": "RDS instance", "DBInstanceNotFoundFault": "RDS instance",
    "DBSnapshotNotFound": "RDS snapshot", "NoSuchHostedZone": "Route53 hosted zone",
    "NoSuchChange": "Route53 change", "NoSuchBucket": "S3 bucket", "NoSuchKey": "S3 object",
    "404": "S3 bucket", "NotFound": "resource",
}
_CONNECTION = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
               "ConnectionError", "ProxyConnectionError", "HTTPClientError")


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError (e.g. `DBInstanceNotFound`), else ""."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error") or {}
        return str(error.get("Code") or "")
    return ""


def _status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        meta = response.get("ResponseMetadata") or {}
        return int(meta.get("HTTPStatusCode") or 0)
    return 0


def _aws_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return redact_text(str((response.get("Error") or {}).get("Message") or "")).strip()
    return ""


def translate(exc: Exception, *, provider: str, doing: str, subject: str = "", setting: str = "",
              preflight: bool = False) -> ProviderError:
    """The drbot error for a failed AWS call.

    `doing` says what drbot was doing ("describing RDS instance `prod`"); `subject` is the named resource and
    `setting` the drbot.yml key it came from, so a not-found error says where to fix it.
    """
    if isinstance(exc, ProviderError):
        return exc
    code = error_code(exc)
    status = _status(exc)
    detail = _aws_message(exc)
    said = f" AWS said: {detail}" if detail else ""
    kind = type(exc).__name__
    if code in THROTTLING:
        return TransientError(f"AWS throttled drbot while {doing} ({code}); drbot retries with backoff.",
                              provider=provider, code=code)
    if code in SERVER_SIDE or status >= 500:
        return TransientError(f"AWS had a server-side error while {doing} ({code or status}); drbot retries with "
                              f"backoff.{said}", provider=provider, code=code or str(status))
    if kind in _CONNECTION or (not code and any(k in kind for k in ("Timeout", "Connection"))):
        return TransientError(f"Could not reach the AWS endpoint while {doing} ({kind}); drbot retries with "
                              "backoff. Check the network or `endpoint_url` if this persists.",
                              provider=provider, code=kind)
    if kind in {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
        return PermanentError(f"No usable AWS credentials while {doing}: set AWS_PROFILE or the standard "
                              "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY variables, or run drbot with an IAM role.",
                              provider=provider, code=kind)
    if kind == "NoRegionError":
        return PermanentError(f"No AWS region while {doing}: add `region: us-east-1` (your region) to the "
                              "resource in drbot.yml.", provider=provider, code=kind)
    if code in CREDENTIALS:
        return PermanentError(f"AWS refused drbot's credentials while {doing} ({code}); check the IAM role or "
                              f"AWS_PROFILE has the permission this action needs.{said}", provider=provider,
                              code=code)
    error_type: type[ProviderError] = PreflightFailed if preflight else PermanentError
    if code in NOT_FOUND:
        what = NOT_FOUND[code]
        name = f" `{subject}`" if subject else ""
        where = f"; check {setting} in drbot.yml or the step's parameters" if setting else ""
        return error_type(f"The {what}{name} does not exist ({code}) — found while {doing}{where}.",
                          provider=provider, code=code)
    if code:
        return error_type(f"AWS refused while {doing} ({code}).{said}", provider=provider, code=code)
    return PermanentError(f"Unexpected AWS client error while {doing} ({kind}): {redact_text(str(exc))}",
                          provider=provider, code=kind)


def aws_errors(*, provider: str, doing: str, subject: str = "", setting: str = "",
               preflight: bool = False) -> AbstractContextManager[None]:
    """Wrap SDK calls so that only drbot errors leave the provider: botocore's errors (ClientError and
    BotoCoreError) are translated, bugs in drbot are not disguised."""
    return map_sdk_errors(lambda exc: translate(exc, provider=provider, doing=doing, subject=subject,
                                                setting=setting, preflight=preflight), sdk=raised_by("botocore"))
