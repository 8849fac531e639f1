"""The typed `/dr` commands: what every surface produces and the engine consumes.

Why apart from the grammar: Slack buttons, the shell and tests build these directly; the text parser in
`runbooks.grammar` is only one way of making them. Each class carries its own usage and summary, which the help reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, ClassVar

from runbooks.timeline import iso

__all__ = [
    "RUNBOOK_COMMANDS", "CancelRun", "Command", "FailoverDns", "FailoverRegion", "Help", "IncidentDetected",
    "IncidentImpact", "IncidentOpen", "IncidentResolve", "IncidentRestored", "ListRunbooks", "PromoteReplica",
    "RestoreDatabase", "RestoreK8s", "RestoreVectors", "RetryRun", "RunRequest", "RunRunbook", "RunbookCommand",
    "Status", "Timeline", "UndeleteObjects",
]  # fmt: skip


@dataclass(frozen=True)
class Command:
    """A parsed `/dr` line. Subclasses carry their own usage and summary, which the help is built from."""

    usage: ClassVar[str] = ""
    summary: ClassVar[str] = ""


@dataclass(frozen=True)
class RunRequest:
    """What a runbook command asks for: the runbook, the environment, the resolved parameters, and the sentence
    that echoes what was resolved (`Restore point: 2026-11-24T10:00:00Z (from `10:00Z`).`)."""

    runbook: str
    environment: str
    params: dict[str, Any]
    echo: str = ""


@dataclass(frozen=True)
class RunbookCommand(Command):
    """A shortcut for one catalog runbook (`/dr restore database prod 10:00Z` → `database-pitr`): the class
    names the runbook and builds its parameters. Adding one: this class, its grammar line, its catalog file."""

    runbook_name: ClassVar[str] = ""
    environment: str

    def request(self) -> RunRequest:
        return RunRequest(runbook=self.runbook_name, environment=self.environment, params={})


@dataclass(frozen=True)
class Help(Command):
    usage: ClassVar[str] = "/dr help [command|time]"
    summary: ClassVar[str] = "Show the commands, the forms of one command, or the time expressions"
    topic: str | None = None


@dataclass(frozen=True)
class ListRunbooks(Command):
    usage: ClassVar[str] = "/dr runbooks"
    summary: ClassVar[str] = "List the runbooks drbot can run"


@dataclass(frozen=True)
class Status(Command):
    usage: ClassVar[str] = "/dr status"
    summary: ClassVar[str] = "Show the open incident, running runbooks, pending approvals and the RTO budget"


@dataclass(frozen=True)
class IncidentOpen(Command):
    usage: ClassVar[str] = "/dr incident open <title…> [sev1|sev2|sev3] [env]"
    summary: ClassVar[str] = "Open an incident (detection time = now unless you say otherwise)"
    title: str
    severity: str | None = None
    environment: str | None = None


@dataclass(frozen=True)
class IncidentDetected(Command):
    usage: ClassVar[str] = "/dr incident detected <time>"
    summary: ClassVar[str] = "Correct when the incident was detected (the start of the RTO clock)"
    at: datetime
    expression: str


@dataclass(frozen=True)
class IncidentImpact(Command):
    usage: ClassVar[str] = "/dr incident impact <time>"
    summary: ClassVar[str] = "Record when the impact (corruption, deletion) started: the RPO is measured from it"
    at: datetime
    expression: str


@dataclass(frozen=True)
class IncidentRestored(Command):
    usage: ClassVar[str] = "/dr incident restored"
    summary: ClassVar[str] = "Mark service restored now (the end of the RTO clock)"


@dataclass(frozen=True)
class IncidentResolve(Command):
    usage: ClassVar[str] = "/dr incident resolve [note…]"
    summary: ClassVar[str] = "Resolve the incident, with an optional note for the post-mortem"
    note: str = ""


@dataclass(frozen=True)
class RestoreDatabase(RunbookCommand):
    usage: ClassVar[str] = "/dr restore database <env> <time>"
    summary: ClassVar[str] = "Point-in-time restore of the database into a new instance (`latest` = newest point)"
    runbook_name: ClassVar[str] = "database-pitr"
    at: datetime | None
    expression: str

    def request(self) -> RunRequest:
        if self.at is None:
            return RunRequest(self.runbook_name, self.environment, {"time": "latest"},
                              "Restore point: the latest restorable time.")
        return RunRequest(self.runbook_name, self.environment, {"time": iso(self.at)},
                          f"Restore point: {iso(self.at)} (from `{self.expression}`).")


@dataclass(frozen=True)
class PromoteReplica(RunbookCommand):
    usage: ClassVar[str] = "/dr promote replica <env>"
    summary: ClassVar[str] = "Promote the cross-region read replica to a standalone primary"
    runbook_name: ClassVar[str] = "replica-promotion"


@dataclass(frozen=True)
class FailoverDns(RunbookCommand):
    usage: ClassVar[str] = "/dr failover dns <env>"
    summary: ClassVar[str] = "Point the service's DNS record at the DR target"
    runbook_name: ClassVar[str] = "dns-failover"


@dataclass(frozen=True)
class FailoverRegion(RunbookCommand):
    usage: ClassVar[str] = "/dr failover region <env>"
    summary: ClassVar[str] = "Full region failover: promote the replica, then switch DNS"
    runbook_name: ClassVar[str] = "region-failover"


@dataclass(frozen=True)
class RestoreK8s(RunbookCommand):
    usage: ClassVar[str] = "/dr restore k8s <env> [backup|latest]"
    summary: ClassVar[str] = "Restore the Kubernetes namespace from a Velero backup (default: the newest)"
    runbook_name: ClassVar[str] = "k8s-restore"
    backup: str | None = None

    def request(self) -> RunRequest:
        return RunRequest(self.runbook_name, self.environment, {"backup": self.backup or "latest"},
                          f"Backup: {self.backup or 'the newest Completed backup'}.")


@dataclass(frozen=True)
class RestoreVectors(RunbookCommand):
    usage: ClassVar[str] = "/dr restore vectors <env> [snapshot|latest]"
    summary: ClassVar[str] = "Restore the vector collection from a snapshot (default: the newest)"
    runbook_name: ClassVar[str] = "vectors-restore"
    snapshot: str | None = None

    def request(self) -> RunRequest:
        return RunRequest(self.runbook_name, self.environment, {"snapshot": self.snapshot or "latest"},
                          f"Snapshot: {self.snapshot or 'the newest snapshot'}.")


@dataclass(frozen=True)
class UndeleteObjects(RunbookCommand):
    usage: ClassVar[str] = "/dr undelete objects <env> <prefix> [<time>]"
    summary: ClassVar[str] = "Bring back objects under a prefix deleted since <time> (default: any deletion)"
    runbook_name: ClassVar[str] = "accidental-deletion"
    prefix: str
    since: datetime | None = None
    expression: str = ""

    def request(self) -> RunRequest:
        since = iso(self.since) if self.since else "latest"
        echo = (f"Undoing deletions since {since} (from `{self.expression}`)." if self.since
                else "Undoing every deletion under the prefix.")
        return RunRequest(self.runbook_name, self.environment, {"prefix": self.prefix, "since": since}, echo)


@dataclass(frozen=True)
class RunRunbook(Command):
    usage: ClassVar[str] = "/dr run <runbook> <env> [key=value …]"
    summary: ClassVar[str] = "Run any runbook from the catalog with parameters"
    runbook: str
    environment: str
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))  # read-only, whatever was given

    def __reduce__(self) -> tuple[type[RunRunbook], tuple[str, str, dict[str, str]]]:
        """Picklable (a job crosses to the worker process); a mapping proxy itself is not."""
        return (type(self), (self.runbook, self.environment, dict(self.params)))


@dataclass(frozen=True)
class Timeline(Command):
    usage: ClassVar[str] = "/dr timeline [md|json|csv]"
    summary: ClassVar[str] = "Export the incident timeline with RTO/RPO (default: Markdown)"
    format: str = "md"


@dataclass(frozen=True)
class CancelRun(Command):
    usage: ClassVar[str] = "/dr cancel <run>"
    summary: ClassVar[str] = "Stop a run (its requester or an approver of its environment; /dr status lists runs)"
    run_id: str


@dataclass(frozen=True)
class RetryRun(Command):
    usage: ClassVar[str] = "/dr retry <run>"
    summary: ClassVar[str] = "Start a finished run again as a new run: same command, planned and approved afresh"
    run_id: str


RUNBOOK_COMMANDS: tuple[type[RunbookCommand], ...] = (RestoreDatabase, PromoteReplica, FailoverDns, FailoverRegion,
                                                    RestoreK8s, RestoreVectors, UndeleteObjects)
"""Every shortcut command; the catalog checks that each one's runbook ships."""

