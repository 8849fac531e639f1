"""How the arguments of each `/dr` command are read: a cursor over the tokens after the command words (`Args`),
and one small parser per command. The registry that selects them, `parse` and the help are `runbooks.grammar`."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection
from datetime import datetime
from types import MappingProxyType

from runbooks.commands import (
    Command,
    DrillRunbook,
    IncidentDetected,
    IncidentImpact,
    IncidentOpen,
    RunRunbook,
    Timeline,
)
from runbooks.errors import GrammarError
from runbooks.timeexpr import require_past, resolve_time, take_time_expression

SEVERITIES = ("sev1", "sev2", "sev3")
TIMELINE_FORMATS = ("md", "json", "csv")
TIME_TOPICS = ("time", "times")


def did_you_mean(token: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(token.lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# --------------------------------------------------------------------------------------------- argument cursor


class Args:
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
        raise self.error(f"unknown environment '{token}'{did_you_mean(token, names.values())}; known: {known}",
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


def incident_open(args: Args) -> Command:
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


def incident_detected(args: Args) -> Command:
    at, expression = args.time(what="the detection time", allow_latest=False)
    args.end()
    assert at is not None  # allow_latest=False guarantees it
    return IncidentDetected(at=at, expression=expression)


def incident_impact(args: Args) -> Command:
    at, expression = args.time(what="the impact start", allow_latest=False)
    args.end()
    assert at is not None  # allow_latest=False guarantees it
    return IncidentImpact(at=at, expression=expression)


def run_runbook(args: Args) -> Command:
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


def drill_runbook(args: Args) -> Command:
    asked = run_runbook(args)
    assert isinstance(asked, RunRunbook)
    return DrillRunbook(runbook=asked.runbook, environment=asked.environment, params=asked.params)


def timeline(args: Args) -> Command:
    if not args.more():
        return Timeline()
    token = args.take("<format>")
    fmt = {"markdown": "md"}.get(token.lower(), token.lower())
    if fmt not in TIMELINE_FORMATS:
        raise args.error(f"unknown format '{token}'; use {', '.join(TIMELINE_FORMATS)}", token)
    args.end()
    return Timeline(format=fmt)


_RUN_ID = re.compile(r"R-?(\d+)", re.IGNORECASE | re.ASCII)


def run_ref(build: Callable[[str], Command]) -> Callable[[Args], Command]:
    """`R-3`, `r-3`, `R3` or `3` all name run R-3 (people type what they see, and what is quick)."""

    def parse_run(args: Args) -> Command:
        token = args.take("<run>")
        match = _RUN_ID.fullmatch(token) or re.fullmatch(r"(\d+)", token, re.ASCII)
        if match is None:
            raise args.error(f"'{token}' is not a run id; runs are named R-<n>, e.g. R-1 (/dr status lists them)",
                             token)
        args.end()
        return build(f"R-{int(match.group(1))}")

    return parse_run


def no_args(command: Command) -> Callable[[Args], Command]:
    def parse_none(args: Args) -> Command:
        args.end()
        return command

    return parse_none
