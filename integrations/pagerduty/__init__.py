"""PagerDuty provider for the `pagerduty` resource (`provider: pagerduty` in drbot.yml).

Credentials come from the process environment through `bot.config.Settings`: `PAGERDUTY_API_TOKEN` (a REST API
key), `PAGERDUTY_FROM_EMAIL` (the user PagerDuty records as the author of notes and status changes) and optionally
`PAGERDUTY_API_URL` (default https://api.pagerduty.com; https only). drbot.yml may set `ca_bundle:` — a PEM file of
CA certificates to trust instead of the system's (a TLS-inspecting proxy, or a local test double).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integrations.common import vocabulary
from integrations.pagerduty.errors import DEFAULT_API_URL, translate
from integrations.pagerduty.provider import PagerDutyProvider
from runbooks.ports import Clock, Provider, ProviderServices, ProviderSpec, StateStore

__all__ = ["DEFAULT_API_URL", "PROVIDES", "PagerDutyProvider", "build_pagerduty_provider", "translate"]


def build_pagerduty_provider(*, environment: str, resource: str, settings: Mapping[str, Any], state: StateStore,
                             clock: Clock, api_token: str | None, from_email: str | None,
                             api_url: str | None = None, client: Any = None) -> PagerDutyProvider:
    """`ca_bundle` from drbot.yml becomes the client's `verify`; the client itself is built on first use."""
    ca_bundle = settings.get("ca_bundle")
    return PagerDutyProvider(environment=environment, resource=resource, settings=settings, api_token=api_token,
                             from_email=from_email, api_url=api_url, verify=str(ca_bundle) if ca_bundle else True,
                             client=client, state=state, clock=clock)


def _build(*, environment: str, resource: str, settings: Mapping[str, Any], services: ProviderServices) -> Provider:
    """The token, author e-mail and API URL are drbot settings (PAGERDUTY_*), read by bot.config."""
    found = services.credentials
    return build_pagerduty_provider(environment=environment, resource=resource, settings=settings,
                                    state=services.state, clock=services.clock,
                                    api_token=found.get("pagerduty_api_token"),
                                    from_email=found.get("pagerduty_from_email"),
                                    api_url=found.get("pagerduty_api_url"))


PROVIDES = (ProviderSpec(name="pagerduty", actions={"pagerduty": vocabulary("pagerduty")}, build=_build,
                         extra="pagerduty", sdk=("pagerduty",)),)
"""The `provider:` names this package serves, for wiring (`ProviderSpec`)."""
