"""The configuration shapes users write, as documents rather than fixtures: DESIGN.md §6's sketch, verbatim.

Tests that run drbot "as a new user would" start from these and switch only what the machine needs (providers to
the sandbox, approvers to shell names), so the shape under test stays the one people copy."""

from __future__ import annotations

DESIGN_SKETCH = """\
tiers: {critical: {rpo: 15m, rto: 1h}, standard: {rpo: 1h, rto: 4h}}
slack: {incident_channel: C0INCIDENT}
pagerduty:
  services: {PSVC1: {channel: C0INCIDENT, environment: prod, runbooks: [database-pitr]}}
environments:
  prod:
    tier: critical
    approvals: {required: 1, approvers: [U0BOB, S0SRE], expire_after: 30m}   # Slack user/group IDs; plain names in the shell
    database: {provider: aws-rds, instance: rag-engine-prod, region: us-west-2,
               replica: {instance: rag-engine-prod-replica, region: us-east-1}}
    dns: {provider: route53, zone_id: Z123, record: api.rag-engine.com, type: A, dr_target: 203.0.113.10}
    kubernetes: {provider: kubernetes, context: prod, namespace: rag-engine, deployment: rag-engine-api,
                 velero_namespace: velero}
    vectors: {provider: qdrant, url: http://qdrant:6333, collection: documents}
    objects: {provider: s3, bucket: rag-engine-documents}
"""  # noqa: E501 (verbatim, comment included)
"""DESIGN.md §6's sketch, verbatim: no `settings:` block, real providers named."""
