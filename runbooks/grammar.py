"""`/dr …` text → a typed `Command`.

Why one registry: the parser, `/dr help` and the Slack surface all read `COMMANDS`, so the help can never drift
from what the parser accepts. Every refusal is a `GrammarError` that names the bad token (or what is missing) and
carries the usage of the command being parsed; nothing else escapes `parse`, whatever the user types.
The command classes live in `runbooks.commands` (re-exported here); time expressions in `runbooks.timeexpr`.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from runbooks.commands import (
    CancelRun,
    Command,
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
    RestoreDatabase,
    RestoreK8s,
    RestoreVectors,
    RetryRun,
    RunRunbook,
    Status,
    Timeline,
    UndeleteObjects,
)
from runbooks.errors import GrammarError
from runbooks.timeexpr import looks_like_time, require_past, resolve_time, take_time_expression, time_help

__all__ = [
    "COMMANDS", "CancelRun", "Command", "CommandSpec", "FailoverDns", "FailoverRegion", "Help", "IncidentDetected",
    "IncidentImpact", "IncidentOpen", "IncidentResolve", "IncidentRestored", "ListRunbooks", "PromoteReplica",
    "RestoreDatabase", "RestoreK8s", "RestoreVectors", "RetryRun", "RunRunbook", "Status", "Timeline",
    "UndeleteObjects", "help_text", "parse", "resolve_time", "tokenize",
]  # fmt: skip

SEVERITIES = ("sev1", "sev2", "sev3")
TIMELINE_FORMATS = ("md", "json", "csv")
TIME_TOPICS = ("time", "times")


# --------------------------------------------------------------------------------------------- argument cursor


class _Args:
    """The tokens after the command words, consumed left to right; every failure carries the command's usage."""

    def __init__(self, tokens: list[str], *, usage: str, now: datetime, environments: Collection[str] | None):
        self.tokens = tokens
        self.pos = 0
        self.usage = usage
        self.now = now
        self.environments = environments

    def error(self, message: str, token: str = "") -> GrammarError:
        return GrammarError(message, token=token, usage=self.usage)

    def more(self) -> bool:
        return self.pos < len(self.tokens)

    def peek(self) -> str:
        return self.tokens[self.pos]

    def take(self, what: str) -> str:
        if not self.more():
            raise self.error(f"missing {what}")
        token = self.tokens[self.pos]
        self.pos += 1
        if not token.strip():
            raise self.error(f"empty {what} ('{token}')", token)
        return token

    def rest(self) -> list[str]:
        rest, self.pos = self.tokens[self.pos :], len(self.tokens)
        return rest

    def end(self) -> None:
        if self.more():
            raise self.error(f"unexpected '{self.peek()}' after the command", self.peek())

    def env(self) -> str:
        token = self.take("<env>")
        if "=" in token:
            raise self.error(f"missing <env>: '{token}' looks like a key=value parameter", token)
        return self.known_env(token, strict=True) or token

    def known_env(self, token: str, *, strict: bool) -> str | None:
        """The configured name for `token` (case-insensitive); None if unknown and not `strict`."""
        if self.environments is None:
            return token if strict else None
        names = {name.lower(): name for name in self.environments}
        if token.lower() in names:
            return names[token.lower()]
        if not strict:
            return None
        known = ", ".join(sorted(self.environments)) or "(none configured)"
        raise self.error(f"unknown environment '{token}'{_did_you_mean(token, names.values())}; known: {known}",
                         token)

    def time(self, *, what: str, allow_latest: bool = True) -> tuple[datetime | None, str]:
        if not self.more():
            raise self.error("missing <time>")
        expression, span = take_time_expression(self.tokens, start=self.pos)
        self.pos += span
        at = resolve_time(expression, now=self.now, usage=self.usage)
        if at is None and not allow_latest:
            raise self.error(f"'{expression}' is not allowed here; give a time such as 10:00Z or -30m", expression)
        if at is not None:
            require_past(at, now=self.now, expression=expression, usage=self.usage, what=what)
        return at, expression


# --------------------------------------------------------------------------------------------- per-command parsers


def _incident_open(args: _Args) -> Command:
    words = args.rest()
    severity: str | None = None
    environment: str | None = None
    while words:  # peel a trailing severity and environment, in either order
        last = words[-1]
        if severity is None and last.lower() in SEVERITIES:
            severity = last.lower()
        elif severity is None and re.fullmatch(r"sev[0-9]+", last, re.IGNORECASE | re.ASCII):
            raise args.error(f"unknown severity '{last}'; use {', '.join(SEVERITIES)}", last)
        elif environment is None and (known := args.known_env(last, strict=False)) is not None:
            environment = known
        else:
            break
        words.pop()
    title = " ".join(word.strip() for word in words if word.strip())
    if not title:
        raise args.error("missing <title…>: say what is wrong, e.g. /dr incident open \"API 500s\" sev1 prod")
    return IncidentOpen(title=title, severity=severity, environment=environment)


def _incident_detected(args: _Args) -> Command:
    at, expression = args.time(what="the detection time", allow_latest=False)
    args.end()
    assert at is not None  # allow_latest=False guarantees it
    return IncidentDetected(at=at, expression=expression)


def _incident_impact(args: _Args) -> Command:
    at, expression = args.time(what="the impact start", allow_latest=False)
    args.end()
    assert at is not None  # allow_latest=False guarantees it
    return IncidentImpact(at=at, expression=expression)


def _restore_database(args: _Args) -> Command:
    environment = args.env()
    at, expression = args.time(what="a restore point")
    args.end()
    return RestoreDatabase(environment=environment, at=at, expression=expression)


def _named_or_latest(args: _Args, what: str) -> str | None:
    if not args.more():
        return None
    name = args.take(what)
    args.end()
    return None if name.lower() == "latest" else name


def _restore_k8s(args: _Args) -> Command:
    environment = args.env()
    return RestoreK8s(environment=environment, backup=_named_or_latest(args, "<backup>"))


def _restore_vectors(args: _Args) -> Command:
    environment = args.env()
    return RestoreVectors(environment=environment, snapshot=_named_or_latest(args, "<snapshot>"))


def _undelete_objects(args: _Args) -> Command:
    environment = args.env()
    prefix = args.take("<prefix>")
    if not args.more() and looks_like_time(prefix):
        raise args.error(f"missing <prefix>: '{prefix}' looks like a time; give the prefix first", prefix)
    since: datetime | None = None
    expression = ""
    if args.more():
        since, expression = args.time(what="a restore point")
    args.end()
    return UndeleteObjects(environment=environment, prefix=prefix, since=since, expression=expression)


def _run(args: _Args) -> Command:
    runbook = args.take("<runbook>")
    if "=" in runbook:
        raise args.error(f"missing <runbook>: '{runbook}' looks like a key=value parameter", runbook)
    environment = args.env()
    params: dict[str, str] = {}
    for token in args.rest():
        key, sep, value = token.partition("=")
        key = key.strip()
        if not sep or not key:
            hint = "has no '='" if not sep else "has an empty key"
            raise args.error(f"parameter '{token}' {hint}; write key=value (quote values with spaces: "
                             "key=\"a b\")", token)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key, re.ASCII):
            raise args.error(f"parameter name '{key}' must be letters, digits, _ . or -", token)
        if key in params:
            raise args.error(f"parameter '{key}' is given twice", token)
        params[key] = value
    return RunRunbook(runbook=runbook, environment=environment, params=MappingProxyType(params))


def _timeline(args: _Args) -> Command:
    if not args.more():
        return Timeline()
    token = args.take("<format>")
    fmt = {"markdown": "md"}.get(token.lower(), token.lower())
    if fmt not in TIMELINE_FORMATS:
        raise args.error(f"unknown format '{token}'; use {', '.join(TIMELINE_FORMATS)}", token)
    args.end()
    return Timeline(format=fmt)


_RUN_ID = re.compile(r"R-?(\d+)", re.IGNORECASE | re.ASCII)


def _run_ref(build: Callable[[str], Command]) -> Callable[[_Args], Command]:
    """`R-3`, `r-3`, `R3` or `3` all name run R-3 (people type what they see, and what is quick)."""

    def parse_run(args: _Args) -> Command:
        token = args.take("<run>")
        match = _RUN_ID.fullmatch(token) or re.fullmatch(r"(\d+)", token, re.ASCII)
        if match is None:
            raise args.error(f"'{token}' is not a run id; runs are named R-<n>, e.g. R-1 (/dr status lists them)",
                             token)
        args.end()
        return build(f"R-{int(match.group(1))}")

    return parse_run


def _help(args: _Args) -> Command:
    topic = " ".join(args.rest()).strip().lower() or None
    if topic is not None and topic not in TIME_TOPICS:
        _help_specs(topic)  # refuses an unknown topic now, not when rendering
    return Help(topic=topic)


def _no_args(command: Command) -> Callable[[_Args], Command]:
    def parse_none(args: _Args) -> Command:
        args.end()
        return command

    return parse_none


def _env_only(build: Callable[[str], Command]) -> Callable[[_Args], Command]:
    def parse_env(args: _Args) -> Command:
        environment = args.env()
        args.end()
        return build(environment)

    return parse_env


# --------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class CommandSpec:
    """One command: the words that select it, the class it builds, how to read its arguments, and examples."""

    words: tuple[str, ...]
    command: type[Command]
    parser: Callable[[_Args], Command] = field(repr=False)
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
    CommandSpec(("help",), Help, _help, ("/dr help", "/dr help restore", "/dr help time")),
    CommandSpec(("runbooks",), ListRunbooks, _no_args(ListRunbooks()), ("/dr runbooks",)),
    CommandSpec(("status",), Status, _no_args(Status()), ("/dr status",)),
    CommandSpec(("incident", "open"), IncidentOpen, _incident_open,
                ("/dr incident open \"Checkout returns 500\" sev1 prod", "/dr incident open vectors missing")),
    CommandSpec(("incident", "detected"), IncidentDetected, _incident_detected,
                ("/dr incident detected 09:42Z", "/dr incident detected 20m ago")),
    CommandSpec(("incident", "impact"), IncidentImpact, _incident_impact,
                ("/dr incident impact 09:58Z", "/dr incident impact 45m ago")),
    CommandSpec(("incident", "restored"), IncidentRestored, _no_args(IncidentRestored()),
                ("/dr incident restored",)),
    CommandSpec(("incident", "resolve"), IncidentResolve,
                lambda args: IncidentResolve(note=" ".join(args.rest()).strip()),
                ("/dr incident resolve bad migration rolled back",)),
    CommandSpec(("restore", "database"), RestoreDatabase, _restore_database,
                ("/dr restore database prod 10:00Z", "/dr restore database prod 2026-11-24 10:00",
                 "/dr restore database staging -90m", "/dr restore database prod latest")),
    CommandSpec(("restore", "k8s"), RestoreK8s, _restore_k8s,
                ("/dr restore k8s prod", "/dr restore k8s prod daily-20261124")),
    CommandSpec(("restore", "vectors"), RestoreVectors, _restore_vectors,
                ("/dr restore vectors prod latest", "/dr restore vectors prod documents-2026-11-24")),
    CommandSpec(("promote", "replica"), PromoteReplica, _env_only(lambda env: PromoteReplica(environment=env)),
                ("/dr promote replica prod",)),
    CommandSpec(("failover", "dns"), FailoverDns, _env_only(lambda env: FailoverDns(environment=env)),
                ("/dr failover dns prod",)),
    CommandSpec(("failover", "region"), FailoverRegion, _env_only(lambda env: FailoverRegion(environment=env)),
                ("/dr failover region prod",)),
    CommandSpec(("undelete", "objects"), UndeleteObjects, _undelete_objects,
                ("/dr undelete objects prod docs/2026/ 2h ago", "/dr undelete objects prod uploads/")),
    CommandSpec(("run",), RunRunbook, _run,
                ("/dr run backup-verification staging", "/dr run database-pitr prod time=10:00Z")),
    CommandSpec(("timeline",), Timeline, _timeline, ("/dr timeline", "/dr timeline csv")),
    CommandSpec(("cancel",), CancelRun, _run_ref(lambda run: CancelRun(run_id=run)), ("/dr cancel R-1",)),
    CommandSpec(("retry",), RetryRun, _run_ref(lambda run: RetryRun(run_id=run)), ("/dr retry R-1",)),
)  # fmt: skip

_VERBS: tuple[str, ...] = tuple(dict.fromkeys(spec.words[0] for spec in COMMANDS))
_ALL_USAGE = "\n".join(spec.usage for spec in COMMANDS)


def _did_you_mean(token: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(token.lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _verb_usage(verb: str) -> str:
    return "\n".join(spec.usage for spec in COMMANDS if spec.words[0] == verb)


def _match(tokens: list[str]) -> tuple[CommandSpec, int]:
    """The spec selected by the leading keyword(s) and how many tokens they used."""
    verb = tokens[0].lower()
    family = [spec for spec in COMMANDS if spec.words[0] == verb]
    if not family:
        raise GrammarError(f"unknown command '{tokens[0]}'{_did_you_mean(verb, _VERBS)}",
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
    raise GrammarError(f"unknown '{verb}' command '{tokens[1]}'{_did_you_mean(tokens[1], targets)}; "
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
    return spec.parser(_Args(tokens[used:], usage=spec.usage, now=now, environments=environments))


def _help_specs(topic: str) -> list[CommandSpec]:
    wanted = " ".join(topic.lower().removeprefix("/dr").split())
    specs = [spec for spec in COMMANDS if spec.name == wanted] or [s for s in COMMANDS if s.words[0] == wanted]
    if not specs:
        topics = [*_VERBS, "time"]
        raise GrammarError(f"no help for '{topic}'{_did_you_mean(wanted, topics)}; topics: {', '.join(topics)}",
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
