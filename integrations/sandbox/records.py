"""What the sandbox keeps in the `StateStore` besides each resource's own world, and how it names it.

State kinds: `sandbox.ops` (operation id → record), `sandbox.targets` (`<resource>.<action>:<target>` → creates and
latest operation), `sandbox.failures` (injected-failure counters); each resource module adds its own world kind.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from runbooks.ports import StateStore

OPS_KIND = "sandbox.ops"
TARGETS_KIND = "sandbox.targets"
FAILURES_KIND = "sandbox.failures"
PROVIDER_KIND = "sandbox"


@dataclass
class Write:
    """A full-value world change an operation makes (applied idempotently, re-applied on re-attach)."""

    kind: str
    key: str
    value: dict[str, Any] = field(default_factory=dict)


def digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def operation_id(*, action: str, target: str, run_id: str) -> str:
    """Deterministic, so that a restarted start finds the operation it began before the crash."""
    return f"sbx-{digest(action, target, run_id)[:16]}"


def create_count(state: StateStore, *, action: str, target: str) -> int:
    """How many times `action` (e.g. `database.restore_pitr`) created something for `target`."""
    record = state.load_state(kind=TARGETS_KIND, key=f"{action}:{target}") or {}
    return int(record.get("creates", 0))

