"""Time expressions: the words an on-call engineer types for "when" (`10:00Z`, `-90m`, `2h ago`, `latest`).

Why a module of its own: the restore point is the most dangerous parameter drbot takes, so its rules live in one
place and `/dr help time` is generated from the same table the resolver follows. Everything resolves to a
timezone-aware UTC datetime with whole seconds, so the echoed time, the plan hash and the cloud call all agree.
A bad expression is a `GrammarError` that names it and lists the accepted forms.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

from runbooks.errors import GrammarError
from runbooks.timeline import iso

TIME_FORMS: tuple[tuple[str, str], ...] = (
    ("10:00Z  10:00  10:00:30Z", "the most recent past such UTC time (yesterday's if today's is still ahead)"),
    ("10:00+02:00", "a clock time at an explicit offset, converted to UTC"),
    ("2026-11-24T10:00:00Z  2026-11-24T10:00Z", "an absolute UTC time"),
    ("2026-11-24 10:00", "the same, with a space instead of the T"),
    ("2026-11-24T10:00:00+02:00", "an absolute time at an explicit offset, converted to UTC"),
    ("-90m  -2h  -1d  -30s", "that long before now"),
    ("90m ago  2h ago", "the same, in words"),
    ("now", "this second"),
    ("latest", "the newest restorable point, where the command allows it"),
)

ACCEPTED_FORMS = "10:00Z, 10:00, 10:00:30Z, 2026-11-24T10:00:00Z, 2026-11-24 10:00, -90m, 2h ago, now, latest"

_OFFSET = r"(?P<tz>z|[+-][0-9]{2}:?[0-9]{2})?"
_CLOCK = r"(?P<h>[0-9]{1,2}):(?P<mi>[0-9]{2})(?::(?P<s>[0-9]{2})(?:\.[0-9]{1,9})?)?"
_DATE = r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})"
_CLOCK_RE = re.compile(_CLOCK + _OFFSET, re.IGNORECASE | re.ASCII)
_DATETIME_RE = re.compile(_DATE + r"[t ]" + _CLOCK + _OFFSET, re.IGNORECASE | re.ASCII)
_DATE_RE = re.compile(_DATE, re.ASCII)
_UNITS = {
    "s": 1, "sec": 1, "secs": 1,
    "m": 60, "min": 60, "mins": 60,
    "h": 3600, "hr": 3600, "hrs": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
_UNIT = "|".join(sorted(_UNITS, key=len, reverse=True))
_MINUS_RE = re.compile(rf"-(?P<n>[0-9]{{1,9}})(?P<u>{_UNIT})", re.IGNORECASE | re.ASCII)
_AGO_RE = re.compile(rf"(?P<n>[0-9]{{1,9}})(?P<u>{_UNIT}) +ago", re.IGNORECASE | re.ASCII)


def iso_z(moment: datetime) -> str:
    """The one way drbot prints a time: ISO-8601 UTC with `Z`, whole seconds (`runbooks.timeline.iso`)."""
    return iso(moment)


def time_help() -> str:
    """`/dr help time`, generated from TIME_FORMS so that the help cannot drift from the resolver."""
    width = max(len(form) for form, _ in TIME_FORMS)
    lines = ["Time expressions (always resolved to UTC; drbot echoes the absolute time it understood):"]
    lines += [f"  {form.ljust(width)}  {meaning}" for form, meaning in TIME_FORMS]
    lines.append("A time without an offset is UTC. Restore points and detection times must be in the past.")
    return "\n".join(lines)


def take_time_expression(tokens: Sequence[str], *, start: int) -> tuple[str, int]:
    """The time expression starting at `tokens[start]` and how many tokens it spans.

    Why: `2026-11-24 10:00` and `2h ago` reach the parser as two tokens; joining them here keeps that rule next
    to the forms it belongs to.
    """
    first = tokens[start]
    if start + 1 < len(tokens):
        second = tokens[start + 1]
        if _DATE_RE.fullmatch(first) and _CLOCK_RE.fullmatch(second):
            return f"{first} {second}", 2
        if second.lower() == "ago":
            return f"{first} {second}", 2
    return first, 1


def looks_like_time(token: str) -> bool:
    """True when a token is shaped like a time expression (used to explain a missing argument)."""
    text = token.strip()
    return bool(
        _CLOCK_RE.fullmatch(text) or _DATETIME_RE.fullmatch(text) or _DATE_RE.fullmatch(text)
        or _MINUS_RE.fullmatch(text) or text.lower() in {"now", "latest"}
    )


def resolve_time(expression: str, *, now: datetime, usage: str = "") -> datetime | None:
    """Resolve a time expression against `now`; None means `latest` (the caller decides what that is).

    `usage` is the form of the command being parsed, carried on the error; without it the error's usage is the
    list of accepted time forms.
    """
    current = _as_utc(now).replace(microsecond=0)
    text = " ".join(expression.split())
    lowered = text.lower()
    if not text:
        raise _bad(expression, "missing <time>", usage)
    if lowered == "latest":
        return None
    if lowered == "now":
        return current
    try:
        moment = _resolve(text, current)
    except (ValueError, OverflowError) as exc:
        raise _bad(expression, f"'{expression}' is not a valid time ({exc})", usage) from exc
    if moment is None:
        raise _bad(expression, f"'{expression}' is not a time I understand", usage)
    return moment


def require_past(
    moment: datetime, *, now: datetime, expression: str, usage: str = "", what: str = "a restore point"
) -> datetime:
    """Refuse a time after `now`: nobody can restore to, or have detected something at, a future moment."""
    if moment > _as_utc(now).replace(microsecond=0):
        raise GrammarError(
            f"'{expression}' ({iso_z(moment)}) is in the future; {what} must be in the past", token=expression,
            usage=usage or f"<time> is one of {ACCEPTED_FORMS}",
        )
    return moment


def _resolve(text: str, now: datetime) -> datetime | None:
    """None when no form matches; ValueError/OverflowError when a form matches but the values are impossible."""
    match = _CLOCK_RE.fullmatch(text)
    if match:
        offset = _offset(match.group("tz"))
        local_now = now.astimezone(offset)
        candidate = local_now.replace(hour=_hour(match), minute=_minute(match), second=_second(match))
        if candidate > local_now:
            candidate -= timedelta(days=1)
        return candidate.astimezone(UTC)
    match = _DATETIME_RE.fullmatch(text)
    if match:
        moment = datetime(
            int(match.group("y")), int(match.group("mo")), int(match.group("d")),
            _hour(match), _minute(match), _second(match), tzinfo=_offset(match.group("tz")),
        )  # fmt: skip
        return moment.astimezone(UTC)
    match = _MINUS_RE.fullmatch(text) or _AGO_RE.fullmatch(text)
    if match:
        seconds = int(match.group("n")) * _UNITS[match.group("u").lower()]
        return now - timedelta(seconds=seconds)
    return None


def _hour(match: re.Match[str]) -> int:
    value = int(match.group("h"))
    if value > 23:
        raise ValueError(f"hour {value} is not 0-23")
    return value


def _minute(match: re.Match[str]) -> int:
    value = int(match.group("mi"))
    if value > 59:
        raise ValueError(f"minute {value} is not 0-59")
    return value


def _second(match: re.Match[str]) -> int:
    raw = match.group("s")
    value = int(raw) if raw else 0
    if value > 59:
        raise ValueError(f"second {value} is not 0-59")
    return value


def _offset(raw: str | None) -> timezone:
    if not raw or raw.lower() == "z":
        return UTC
    digits = raw[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 23 or minutes > 59:
        raise ValueError(f"offset {raw} is out of range")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if raw[0] == "-" else delta)


def _as_utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")  # a programming error, not user input
    return now.astimezone(UTC)


def _bad(expression: str, reason: str, usage: str) -> GrammarError:
    if usage:
        return GrammarError(f"{reason}; accepted time forms: {ACCEPTED_FORMS}", token=expression, usage=usage)
    return GrammarError(reason, token=expression, usage=f"<time> is one of {ACCEPTED_FORMS}")
