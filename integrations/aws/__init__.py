"""AWS providers: RDS (`aws-rds`, resource `database`), Route53 (`route53`, resource `dns`) and S3 (`s3`, resource
`objects`). boto3 is imported only when a client is first needed; tests inject clients aimed at moto.

`build_aws_provider` picks the provider by resource, so wiring registers one factory for the three names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integrations.aws.base import AwsProvider
from integrations.aws.errors import aws_errors, translate
from integrations.aws.rds import AwsRds
from integrations.aws.route53 import AwsRoute53
from integrations.aws.s3 import AwsS3
from integrations.integrity import IntegrityActions
from runbooks.errors import ConfigError
from runbooks.ports import Clock, Provider, StateStore

PROVIDERS: dict[str, type[AwsProvider]] = {"database": AwsRds, "dns": AwsRoute53, "objects": AwsS3}
PROVIDER_NAMES: dict[str, str] = {cls.kind: resource for resource, cls in PROVIDERS.items()}
"""`provider:` value in drbot.yml → the resource it serves (`aws-rds` → `database`)."""

__all__ = ["PROVIDERS", "PROVIDER_NAMES", "AwsProvider", "AwsRds", "AwsRoute53", "AwsS3", "aws_errors",
           "build_aws_provider", "translate"]


def build_aws_provider(*, environment: str, resource: str, settings: Mapping[str, Any],
                       state: StateStore | None = None, clock: Clock | None = None,
                       environ: Mapping[str, str] | None = None) -> Provider:
    """The AWS provider for one resource; its boto3 client is created from `settings` on first use."""
    cls = PROVIDERS.get(resource)
    if cls is None:
        raise ConfigError(f"environments.{environment}.{resource}: AWS has no provider for `{resource}`; AWS serves "
                          + ", ".join(f"{r} (provider: {c.kind})" for r, c in sorted(PROVIDERS.items())) + ".")
    # The database provider reads its `integrity.url_env` variable from `environ` (bot.config hands it over).
    extra: dict[str, Any] = {"environ": environ} if issubclass(cls, IntegrityActions) else {}
    provider: Provider = cls(environment=environment, resource=resource, settings=settings, state=state, clock=clock,
                             **extra)
    return provider
