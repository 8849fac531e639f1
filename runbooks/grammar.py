"""`/dr …` text → a typed `Command`.

Why one registry: the parser, `/dr help` and the Slack surface all read `COMMANDS`, so the help can never drift
from what the parser accepts. Every refusal is a `GrammarError` that names the bad token (or what is missing) and
carries the usage of the command being parsed; nothing else escapes `parse`, whatever the user types.
The command classes live in `runbooks.commands` (re-exported here), the argument parsers in `runbooks.parsers`,
time expressions in `runbooks.timeexpr`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime

from runbooks.commands import (
    RUNBOOK_COMMANDS,
    CancelRun,
    Command,
    DrillRunbook,
    FailoverDns,
    FailoverRegion,
    Help,
    IncidentDetected,
    IncidentImpact,
    IncidentOpen,
    IncidentResolve,
    IncidentRestored,
    ListRunbooks,
    PromoteReplica,
    RecoveryTimesTable,
    RestoreDatabase,
    RestoreK8s,
    RestoreVectors,
    RetryRun,
    RpoTable,
    RunRunbook,
    Status,
    Timeline,
    UndeleteObjects,
)
from runbooks.errors import GrammarError
from runbooks.parsers import (
    TIME_TOPICS,
    Args,
    did_you_mean,
    drill_runbook,
    incident_detected,
    incident_impact,
    incident_open,
    no_args,
    run_ref,
    run_runbook,
    timeline,
)
from runbooks.timeexpr import resolve_time, time_help

__all__ = [
    "COMMANDS", "CancelRun", "Command", "CommandSpec", "DrillRunbook", "FailoverDns", "FailoverRegion", "Help",
    "IncidentDetected",
    "IncidentImpact", "IncidentOpen", "IncidentResolve", "IncidentRestored", "ListRunbooks", "PromoteReplica",
    "RecoveryTimesTable", "RestoreDatabase", "RestoreK8s", "RestoreVectors", "RetryRun", "RpoTable", "RunRunbook",
    "Status",
    "Timeline", "UndeleteObjects", "help_text", "parse", "resolve_time", "tokenize",
]  # fmt: skip



def help_topic(args: Args) -> Command:
    topic = " ".join(args.rest()).strip().lower() or None
    if topic is not None and topic not in TIME_TOPICS:
        _help_specs(topic)  # refuses an unknown topic now, not when rendering
    return Help(topic=topic)


# --------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class CommandSpec:
    """One command: the words that select it, the class it builds, how to read its arguments, and examples."""

    words: tuple[str, ...]
    command: type[Command]
    parser: Callable[[Args], Command] = field(repr=False)
    examples: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return " ".join(self.words)

    @property
    def usage(self) -> str:
        return self.command.usage

    @property
    def summary(self) -> str:
        return self.command.summary


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(("help",), Help, help_topic, ("/dr help", "/dr help restore", "/dr help time")),
    CommandSpec(("runbooks",), ListRunbooks, no_args(ListRunbooks()), ("/dr runbooks",)),
    CommandSpec(("status",), Status, no_args(Status()), ("/dr status",)),
    CommandSpec(("incident", "open"), IncidentOpen, incident_open,
                ("/dr incident open \"Checkout returns 500\" sev1 prod", "/dr incident open vectors missing")),
    CommandSpec(("incident", "detected"), IncidentDetected, incident_detected,
                ("/dr incident detected 09:42Z", "/dr incident detected 20m ago")),
    CommandSpec(("incident", "impact"), IncidentImpact, incident_impact,
                ("/dr incident impact 09:58Z", "/dr incident impact 45m ago")),
    CommandSpec(("incident", "restored"), IncidentRestored, no_args(IncidentRestored()),
                ("/dr incident restored",)),
    CommandSpec(("incident", "resolve"), IncidentResolve,
                lambda args: IncidentResolve(note=" ".join(args.rest()).strip()),
                ("/dr incident resolve bad migration rolled back",)),
    *(CommandSpec(command.words, command, command.read, command.examples) for command in RUNBOOK_COMMANDS),
    CommandSpec(("run",), RunRunbook, run_runbook,
                ("/dr run backup-verification staging", "/dr run database-pitr prod time=10:00Z")),
    CommandSpec(("drill",), DrillRunbook, drill_runbook,
                ("/dr drill database-pitr staging time=latest", "/dr drill backup-verification prod")),
    CommandSpec(("timeline",), Timeline, timeline, ("/dr timeline", "/dr timeline csv")),
    CommandSpec(("rto",), RecoveryTimesTable, no_args(RecoveryTimesTable()), ("/dr rto",)),
    CommandSpec(("rpo",), RpoTable, no_args(RpoTable()), ("/dr rpo",)),
    CommandSpec(("cancel",), CancelRun, run_ref(lambda run: CancelRun(run_id=run)), ("/dr cancel R-1",)),
    CommandSpec(("retry",), RetryRun, run_ref(lambda run: RetryRun(run_id=run)), ("/dr retry R-1",)),
)  # fmt: skip

_VERBS: tuple[str, ...] = tuple(dict.fromkeys(spec.words[0] for spec in COMMANDS))
_ALL_USAGE = "\n".join(spec.usage for spec in COMMANDS)


def _verb_usage(verb: str) -> str:
    return "\n".join(spec.usage for spec in COMMANDS if spec.words[0] == verb)


def _match(tokens: list[str]) -> tuple[CommandSpec, int]:
    """The spec selected by the leading keyword(s) and how many tokens they used."""
    verb = tokens[0].lower()
    family = [spec for spec in COMMANDS if spec.words[0] == verb]
    if not family:
        raise GrammarError(f"unknown command '{tokens[0]}'{did_you_mean(verb, _VERBS)}",
                           token=tokens[0], usage=_ALL_USAGE)
    for spec in family:
        if len(spec.words) == 1:
            return spec, 1
    targets = [spec.words[1] for spec in family]
    if len(tokens) < 2:
        raise GrammarError(f"'{verb}' needs one of: {' | '.join(targets)}", usage=_verb_usage(verb))
    for spec in family:
        if spec.words[1] == tokens[1].lower():
            return spec, 2
    raise GrammarError(f"unknown '{verb}' command '{tokens[1]}'{did_you_mean(tokens[1], targets)}; "
                       f"use one of: {' | '.join(targets)}", token=tokens[1], usage=_verb_usage(verb))


# --------------------------------------------------------------------------------------------- entry points

_NORMALISE = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00a0": " "})  # Slack's smart quotes


def tokenize(text: str) -> list[str]:
    """Split a line like a shell would, minus escapes and comments (backslashes and `#` are ordinary text)."""
    lexer = shlex.shlex(text.translate(_NORMALISE), posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    lexer.escape = ""
    try:
        return list(lexer)
    except ValueError:
        fragment = _unclosed_quote(text.translate(_NORMALISE))
        raise GrammarError(f"unbalanced quote at '{fragment}': close it, or wrap text containing an apostrophe "
                           "in double quotes", token=fragment, usage=_guess_usage(text)) from None


def _unclosed_quote(text: str) -> str:
    quote, start = "", 0
    for index, char in enumerate(text):
        if quote and char == quote:
            quote = ""
        elif not quote and char in "'\"":
            quote, start = char, index
    fragment = text[start:] if quote else text
    return fragment if len(fragment) <= 40 else fragment[:39] + "…"


def _guess_usage(text: str) -> str:
    words = [word.lower() for word in text.split() if word.lower() != "/dr"]
    for spec in COMMANDS:
        if tuple(words[: len(spec.words)]) == spec.words:
            return spec.usage
    return _verb_usage(words[0]) if words and words[0] in _VERBS else _ALL_USAGE


def parse(text: str, *, now: datetime, environments: Collection[str] | None = None) -> Command:
    """Parse one `/dr` line (with or without the leading `/dr`). An empty line asks for help."""
    tokens = tokenize(text)
    if tokens and tokens[0].lower() == "/dr":
        tokens = tokens[1:]
    if not tokens:
        return Help(topic=None)
    spec, used = _match(tokens)
    return spec.parser(Args(tokens[used:], usage=spec.usage, now=now, environments=environments))


def _help_specs(topic: str) -> list[CommandSpec]:
    wanted = " ".join(topic.lower().removeprefix("/dr").split())
    specs = [spec for spec in COMMANDS if spec.name == wanted] or [s for s in COMMANDS if s.words[0] == wanted]
    if not specs:
        topics = [*_VERBS, "time"]
        raise GrammarError(f"no help for '{topic}'{did_you_mean(wanted, topics)}; topics: {', '.join(topics)}",
                           token=topic, usage=Help.usage)
    return specs


def help_text(topic: str | None = None) -> str:
    """`/dr help [topic]`, built from COMMANDS and the time-expression table."""
    if topic is not None and topic.strip().lower() in TIME_TOPICS:
        return time_help()
    if topic is None or not topic.strip():
        lines = ["drbot runs disaster-recovery runbooks; guarded steps wait for a second person's approval.", ""]
        lines += [f"{spec.usage}  — {spec.summary}" for spec in COMMANDS]
        lines += ["", "Times: 10:00Z, 2026-11-24 10:00, -90m, 2h ago, latest (/dr help time). "
                  "/dr help <command> shows examples."]
        return "\n".join(lines)
    lines = []
    for spec in _help_specs(topic):
        lines += [spec.usage, f"  {spec.summary}"] + [f"  e.g. {example}" for example in spec.examples]
    return "\n".join(lines)
