"""What every AWS provider adds to `integrations.common`: lazily created boto3 clients and botocore's times.

Why lazily: boto3 takes a noticeable fraction of a second to import and needs a region and credentials; building
it only when an action runs keeps `drbot --help` fast and lets `drbot check` report a bad drbot.yml first.
Tests pass a client aimed at moto (or wrapped in a `botocore.stub.Stubber`) instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from integrations.aws.errors import aws_errors
from integrations.common import CloudProvider


def utc(moment: datetime) -> datetime:
    """botocore parses timestamps with `tzlocal()`; drbot works in UTC only."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def make_client(service: str, *, settings: Mapping[str, Any], region: str | None = None) -> Any:
    """A boto3 client from the standard credential chain, honouring `region` and `endpoint_url` in settings."""
    import boto3  # lazily: see the module docstring

    name = region or settings.get("region")
    return boto3.client(service, region_name=str(name) if name else None,
                        endpoint_url=str(settings["endpoint_url"]) if settings.get("endpoint_url") else None)


class AwsProvider(CloudProvider):
    """The boto3 client; dispatch lives in `integrations.common`, each resource module fills in `_actions_table`."""

    def _make_client(self) -> Any:
        raise NotImplementedError

    @property
    def client(self) -> Any:
        if self._client is None:
            with aws_errors(provider=self.kind, doing=f"creating the {self.kind} client"):
                self._client = self._make_client()
        return self._client
