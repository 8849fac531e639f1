"""Kubernetes provider (`provider: kubernetes`): Velero restores and Deployment env/Secret/scale rollouts through
the official `kubernetes` client, imported lazily so that `drbot --help` and the sandbox never load it.

Settings (drbot.yml `environments.<env>.kubernetes`): `context` (KUBECONFIG context), `namespace`, `deployment`,
`velero_namespace` (default `velero`); optional `kubeconfig`, `in_cluster: true`, or `api_url` with the bearer
token in the env var named by `token_env` (default `KUBERNETES_TOKEN`), `ca_file`, `request_timeout` (seconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integrations.common import vocabulary
from integrations.kubernetes.client import build_api_client
from integrations.kubernetes.provider import KubernetesProvider
from runbooks.ports import Clock, Provider, ProviderServices, ProviderSpec, StateStore

__all__ = ["PROVIDES", "KubernetesProvider", "build_kubernetes_provider"]


def build_kubernetes_provider(*, environment: str, resource: str, settings: Mapping[str, Any],
                              state: StateStore | None, clock: Clock | None,
                              environ: Mapping[str, str] | None = None) -> Provider:
    """The wiring entry point: the `ApiClient` is built on first use from `settings` and KUBECONFIG; a bearer
    token named by `token_env` is read from `environ` (the process environment, as bot.config hands it over)."""
    if environ is None:
        return KubernetesProvider(environment=environment, resource=resource, settings=settings, state=state,
                                  clock=clock)
    return KubernetesProvider(
        environment=environment, resource=resource, settings=settings, state=state, clock=clock,
        client=lambda context: build_api_client(settings=settings, context=context, environ=environ))


def _build(*, environment: str, resource: str, settings: Mapping[str, Any], services: ProviderServices) -> Provider:
    return build_kubernetes_provider(environment=environment, resource=resource, settings=settings,
                                     state=services.state, clock=services.clock, environ=services.environ)


PROVIDES = (ProviderSpec(name="kubernetes", actions={"kubernetes": vocabulary("kubernetes")}, build=_build,
                         extra="k8s", sdk=("kubernetes",)),)
"""The `provider:` names this package serves, for wiring (`ProviderSpec`)."""
