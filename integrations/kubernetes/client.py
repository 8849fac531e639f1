"""The one place that talks to the kube-apiserver: builds the `ApiClient` lazily and translates every failure.

Why every call goes through `KubeApi.call`: the engine retries only `TransientError` (429, 5xx, an unreachable
API), a human must decide on `PermanentError` (403, 404, 422…), and nothing the apiserver or the client library
prints may leak a token or a Secret value into Slack. `ApiException.__str__` includes response headers, so
messages are built from the `Status` object's `message` only, with known secret values redacted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from integrations.sdk_errors import map_sdk_errors
from runbooks.errors import PermanentError, ProviderError, TransientError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, CustomObjectsApi

PROVIDER_KIND = "kubernetes"
DEFAULT_TOKEN_ENV = "KUBERNETES_TOKEN"
T = TypeVar("T")

_HINTS = {
    401: "the credentials were refused; refresh the kubeconfig (or the token) for this context",
    403: "grant the drbot service account RBAC permission for it (see `kubectl auth can-i`)",
    404: "check the name and namespace in drbot.yml or the runbook step",
    409: "someone else changed it at the same time; retry the step",
    422: "fix the field it names (see the action's parameters) and retry the step",
}


def build_api_client(*, settings: Mapping[str, Any], context: str,
                     environ: Mapping[str, str] | None = None) -> ApiClient:
    """An `ApiClient` from `api_url` (+ the bearer token in the env var named by `token_env`, for tests and
    plain service-account tokens), from the in-cluster service account, or from KUBECONFIG's `context`."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        if settings.get("api_url"):
            cfg = client.Configuration()
            cfg.host = str(settings["api_url"])
            token = (os.environ if environ is None else environ).get(
                str(settings.get("token_env") or DEFAULT_TOKEN_ENV), "")
            if token:
                cfg.api_key = {"authorization": token}
                cfg.api_key_prefix = {"authorization": "Bearer"}
            if settings.get("ca_file"):
                cfg.ssl_ca_cert = str(settings["ca_file"])
            return client.ApiClient(cfg)
        if settings.get("in_cluster"):
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            return client.ApiClient(cfg)
        built: ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=settings.get("kubeconfig") or None, context=context or None)
        return built
    except (ConfigException, OSError) as exc:
        where = f"context `{context}`" if context else "the current context"
        raise PermanentError(f"Cannot load Kubernetes credentials for {where}: {exc}. Check KUBECONFIG and "
                             f"`kubectl config get-contexts`, or set `context:` in drbot.yml.",
                             provider=PROVIDER_KIND, code="KubeconfigError") from exc


def status_message(body: Any) -> tuple[str, str]:
    """(reason, message) from the apiserver's `Status` JSON body; empty strings when it is not one."""
    try:
        data = json.loads(body) if isinstance(body, str | bytes) else {}
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    return str(data.get("reason") or ""), str(data.get("message") or "")


def redact(text: str, secrets: Sequence[str]) -> str:
    for value in secrets:
        if value and len(value) >= 3:
            text = text.replace(value, "[redacted]")
    return text


def translated(what: str, *, secrets: Sequence[str] = ()) -> AbstractContextManager[None]:
    """Map `ApiException` and connection failures onto drbot's exception tree; `what` says what was tried,
    e.g. "read Deployment rag-engine/api"."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    def translate(exc: Exception) -> ProviderError:
        if not isinstance(exc, ApiException):
            return TransientError(f"Kubernetes API is unreachable while trying to {what} "
                                  f"({type(exc).__name__}); drbot retries with backoff.",
                                  provider=PROVIDER_KIND, code="Unreachable")
        status = int(exc.status or 0)
        reason, message = status_message(exc.body)
        detail = redact(message or str(exc.reason or "no message"), secrets)[:400]
        code = reason or f"HTTP{status}"
        if status == 429 or status >= 500 or status == 0:
            return TransientError(f"Kubernetes API could not {what} right now (HTTP {status}: {detail}); "
                                  f"drbot retries with backoff.", provider=PROVIDER_KIND, code=code)
        hint = _HINTS.get(status, "fix the request and retry the step")
        return PermanentError(f"Kubernetes API refused to {what} (HTTP {status} {reason or ''}: {detail}); {hint}.",
                              provider=PROVIDER_KIND, code=code)

    return map_sdk_errors(translate, sdk=lambda exc: isinstance(exc, ApiException | HTTPError))


class KubeApi:
    """The typed API groups drbot uses, over one `ApiClient`, with a per-request timeout."""

    def __init__(self, api_client: ApiClient, *, timeout: float = 30.0) -> None:
        from kubernetes import client

        self.timeout = timeout
        self.custom: CustomObjectsApi = client.CustomObjectsApi(api_client)
        self.apps: AppsV1Api = client.AppsV1Api(api_client)
        self.core: CoreV1Api = client.CoreV1Api(api_client)

    def call(self, what: str, fn: Callable[..., T], /, *args: Any, secrets: Sequence[str] = (),
             **kwargs: Any) -> T:
        with translated(what, secrets=secrets):
            return fn(*args, _request_timeout=self.timeout, **kwargs)


def not_found(exc: ProviderError) -> bool:
    return exc.code == "NotFound"
