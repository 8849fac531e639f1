"""The typed `/dr` commands: what every surface produces and the engine consumes.

Why apart from the grammar: Slack buttons, the shell and tests build these directly; the text parser in
`runbooks.grammar` is only one way of making them. Each class carries its own usage and summary, which the help reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

from runbooks.errors import GrammarError
from runbooks.timeexpr import looks_like_time
from runbooks.timeline import iso

__all__ = [
    "RUNBOOK_COMMANDS", "CancelRun", "Command", "FailoverDns", "FailoverRegion", "Help", "IncidentDetected",
    "IncidentImpact", "IncidentOpen", "IncidentResolve", "IncidentRestored", "ListRunbooks", "PromoteReplica",
    "RecoveryTimesTable", "RestoreDatabase", "RestoreK8s", "RestoreVectors", "RetryRun", "RunRequest", "RunRunbook",
    "RunbookCommand", "Status", "Timeline", "UndeleteObjects",
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
    drill: bool = False


class ArgReader(Protocol):
    """The tokens after a command's words, read left to right; every refusal carries the command's usage
    (`runbooks.parsers.Args`)."""

    def more(self) -> bool: ...
    def take(self, what: str) -> str: ...
    def end(self) -> None: ...
    def env(self) -> str: ...
    def time(self, *, what: str, allow_latest: bool = True) -> tuple[datetime | None, str]: ...
    def error(self, message: str, token: str = "") -> GrammarError: ...


@dataclass(frozen=True)
class RunbookCommand(Command):
    """A shortcut for one catalog runbook (`/dr restore database prod 10:00Z` → `database-pitr`). The class is
    the whole command: the words that select it, how its arguments read (`read`), the runbook it runs and the
    parameters it passes (`request`). Adding one is this class and the runbook's catalog file: the grammar, the
    help and the engine find every subclass (`RUNBOOK_COMMANDS`)."""

    runbook_name: ClassVar[str] = ""
    words: ClassVar[tuple[str, ...]] = ()
    examples: ClassVar[tuple[str, ...]] = ()
    environment: str

    @classmethod
    def read(cls, args: ArgReader) -> RunbookCommand:
        """The plain form, `/dr <words> <env>`."""
        environment = args.env()
        args.end()
        return cls(environment=environment)

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
    words: ClassVar[tuple[str, ...]] = ("restore", "database")
    examples: ClassVar[tuple[str, ...]] = (
        "/dr restore database prod 10:00Z", "/dr restore database prod 2026-11-24 10:00",
        "/dr restore database staging -90m", "/dr restore database prod latest")
    at: datetime | None
    expression: str

    @classmethod
    def read(cls, args: ArgReader) -> RestoreDatabase:
        environment = args.env()
        at, expression = args.time(what="a restore point")
        args.end()
        return cls(environment=environment, at=at, expression=expression)

    def request(self) -> RunRequest:
        if self.at is None:
            return RunRequest(self.runbook_name, self.environment, {"time": "latest"},
                              "Restore point: the latest restorable time.")
        return RunRequest(self.runbook_name, self.environment, {"time": iso(self.at)},
                          f"Restore point: {iso(self.at)} (from `{self.expression}`).")


@dataclass(frozen=True)
class RestoreK8s(RunbookCommand):
    usage: ClassVar[str] = "/dr restore k8s <env> [backup|latest]"
    summary: ClassVar[str] = "Restore the Kubernetes namespace from a Velero backup (default: the newest)"
    runbook_name: ClassVar[str] = "k8s-restore"
    words: ClassVar[tuple[str, ...]] = ("restore", "k8s")
    examples: ClassVar[tuple[str, ...]] = ("/dr restore k8s prod", "/dr restore k8s prod daily-20261124")
    backup: str | None = None

    @classmethod
    def read(cls, args: ArgReader) -> RestoreK8s:
        environment = args.env()
        return cls(environment=environment, backup=_named_or_latest(args, "<backup>"))

    def request(self) -> RunRequest:
        return RunRequest(self.runbook_name, self.environment, {"backup": self.backup or "latest"},
                          f"Backup: {self.backup or 'the newest Completed backup'}.")


@dataclass(frozen=True)
class RestoreVectors(RunbookCommand):
    usage: ClassVar[str] = "/dr restore vectors <env> [snapshot|latest]"
    summary: ClassVar[str] = "Restore the vector collection from a snapshot (default: the newest)"
    runbook_name: ClassVar[str] = "vectors-restore"
    words: ClassVar[tuple[str, ...]] = ("restore", "vectors")
    examples: ClassVar[tuple[str, ...]] = ("/dr restore vectors prod latest",
                                           "/dr restore vectors prod documents-2026-11-24")
    snapshot: str | None = None

    @classmethod
    def read(cls, args: ArgReader) -> RestoreVectors:
        environment = args.env()
        return cls(environment=environment, snapshot=_named_or_latest(args, "<snapshot>"))

    def request(self) -> RunRequest:
        return RunRequest(self.runbook_name, self.environment, {"snapshot": self.snapshot or "latest"},
                          f"Snapshot: {self.snapshot or 'the newest snapshot'}.")


@dataclass(frozen=True)
class PromoteReplica(RunbookCommand):
    usage: ClassVar[str] = "/dr promote replica <env>"
    summary: ClassVar[str] = "Promote the cross-region read replica to a standalone primary"
    runbook_name: ClassVar[str] = "replica-promotion"
    words: ClassVar[tuple[str, ...]] = ("promote", "replica")
    examples: ClassVar[tuple[str, ...]] = ("/dr promote replica prod",)


@dataclass(frozen=True)
class FailoverDns(RunbookCommand):
    usage: ClassVar[str] = "/dr failover dns <env>"
    summary: ClassVar[str] = "Point the service's DNS record at the DR target"
    runbook_name: ClassVar[str] = "dns-failover"
    words: ClassVar[tuple[str, ...]] = ("failover", "dns")
    examples: ClassVar[tuple[str, ...]] = ("/dr failover dns prod",)


@dataclass(frozen=True)
class FailoverRegion(RunbookCommand):
    usage: ClassVar[str] = "/dr failover region <env>"
    summary: ClassVar[str] = "Full region failover: promote the replica, then switch DNS"
    runbook_name: ClassVar[str] = "region-failover"
    words: ClassVar[tuple[str, ...]] = ("failover", "region")
    examples: ClassVar[tuple[str, ...]] = ("/dr failover region prod",)


@dataclass(frozen=True)
class UndeleteObjects(RunbookCommand):
    usage: ClassVar[str] = "/dr undelete objects <env> <prefix> [<time>]"
    summary: ClassVar[str] = "Bring back objects under a prefix deleted since <time> (default: any deletion)"
    runbook_name: ClassVar[str] = "accidental-deletion"
    words: ClassVar[tuple[str, ...]] = ("undelete", "objects")
    examples: ClassVar[tuple[str, ...]] = ("/dr undelete objects prod docs/2026/ 2h ago",
                                           "/dr undelete objects prod uploads/")
    prefix: str
    since: datetime | None = None
    expression: str = ""

    @classmethod
    def read(cls, args: ArgReader) -> UndeleteObjects:
        environment = args.env()
        prefix = args.take("<prefix>")
        if not args.more() and looks_like_time(prefix):
            raise args.error(f"missing <prefix>: '{prefix}' looks like a time; give the prefix first", prefix)
        since: datetime | None = None
        expression = ""
        if args.more():
            since, expression = args.time(what="a restore point")
        args.end()
        return cls(environment=environment, prefix=prefix, since=since, expression=expression)

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
class RpoTable(Command):
    usage: ClassVar[str] = "/dr rpo"
    summary: ClassVar[str] = "The RPO table: each store's newest recovery point, its age and its target, read now"


@dataclass(frozen=True)
class DrillRunbook(RunRunbook):
    usage: ClassVar[str] = "/dr drill <runbook> <env> [key=value …]"
    summary: ClassVar[str] = ("Drill a recovery runbook against isolated targets (never live traffic), measure it, "
                              "then delete what it made")


@dataclass(frozen=True)
class Timeline(Command):
    usage: ClassVar[str] = "/dr timeline [md|json|csv]"
    summary: ClassVar[str] = "Export the incident timeline with RTO/RPO (default: Markdown)"
    format: str = "md"


@dataclass(frozen=True)
class RecoveryTimesTable(Command):
    usage: ClassVar[str] = "/dr rto"
    summary: ClassVar[str] = "The recovery-time table: each scenario's RTO target against its measured drills and runs"


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


def _named_or_latest(args: ArgReader, what: str) -> str | None:
    if not args.more():
        return None
    name = args.take(what)
    args.end()
    return None if name.lower() == "latest" else name


RUNBOOK_COMMANDS: tuple[type[RunbookCommand], ...] = tuple(RunbookCommand.__subclasses__())
"""Every shortcut command, in the order they are defined (the help lists them so); the grammar reads each one's
words and `read`, and loading the built-in catalog checks that each one's runbook ships."""

