"""AWS providers: RDS (`aws-rds`, resource `database`), Route53 (`route53`, resource `dns`) and S3 (`s3`, resource
`objects`). boto3 is imported only when a client is first needed; tests inject clients aimed at moto.

`build_aws_provider` picks the provider by resource; `PROVIDES` declares the four `provider:` names (Aurora too) to
wiring, with the `aws` extra that installs boto3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integrations.aws.aurora import AuroraProvider
from integrations.aws.base import AwsProvider
from integrations.aws.errors import aws_errors, translate
from integrations.aws.rds import AwsRds
from integrations.aws.route53 import AwsRoute53
from integrations.aws.s3 import AwsS3
from integrations.builders import build_cloud_provider
from integrations.common import vocabulary
from runbooks.ports import Clock, Provider, ProviderBuilder, ProviderServices, ProviderSpec, StateStore

PROVIDERS: dict[str, type[AwsProvider]] = {"database": AwsRds, "dns": AwsRoute53, "objects": AwsS3}

__all__ = ["PROVIDERS", "PROVIDES", "AuroraProvider", "AwsProvider", "AwsRds", "AwsRoute53", "AwsS3", "aws_errors",
           "build_aws_provider", "translate"]


def build_aws_provider(*, environment: str, resource: str, settings: Mapping[str, Any],
                       state: StateStore | None = None, clock: Clock | None = None,
                       environ: Mapping[str, str] | None = None) -> Provider:
    """The AWS provider for one resource; its boto3 client is created from `settings` on first use."""
    return build_cloud_provider(PROVIDERS, cloud="AWS", serves="AWS", environment=environment,
                                resource=resource, settings=settings, state=state, clock=clock, environ=environ)


def _build(*, environment: str, resource: str, settings: Mapping[str, Any], services: ProviderServices) -> Provider:
    return build_aws_provider(environment=environment, resource=resource, settings=settings, state=services.state,
                              clock=services.clock, environ=services.environ)


def _build_aurora(*, environment: str, resource: str, settings: Mapping[str, Any],
                  services: ProviderServices) -> Provider:
    return AuroraProvider(environment=environment, resource=resource, settings=settings, state=services.state,
                          clock=services.clock, environ=services.environ)


def _spec(name: str, resource: str, build: ProviderBuilder = _build, without: tuple[str, ...] = ()) -> ProviderSpec:
    return ProviderSpec(name=name, actions={resource: vocabulary(resource, without=without)}, build=build,
                        extra="aws", sdk=("boto3",))


PROVIDES = (
    _spec("aws-rds", "database"),
    _spec("aws-aurora", "database", _build_aurora,
          without=("check_replica", "promote_replica", "restore_latest_backup", "create_replica")),
    _spec("route53", "dns"),
    _spec("s3", "objects"),
)
"""The `provider:` names AWS serves, for wiring (`ProviderSpec`)."""
