"""Time expressions resolve to the UTC moment an SRE means, or are refused with the accepted forms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from runbooks.errors import GrammarError
from runbooks.timeexpr import (
    ACCEPTED_FORMS,
    TIME_FORMS,
    iso_z,
    require_past,
    resolve_time,
    take_time_expression,
    time_help,
)

NOW = datetime(2026, 11, 24, 12, 0, 0, 654321, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


RESOLVES = [
    # clock times: today's when already past (or exactly now), else yesterday's
    ("10:00Z", NOW, utc(2026, 11, 24, 10, 0)),
    ("10:00", NOW, utc(2026, 11, 24, 10, 0)),
    ("10:00z", NOW, utc(2026, 11, 24, 10, 0)),
    ("10:00:30Z", NOW, utc(2026, 11, 24, 10, 0, 30)),
    ("9:05", NOW, utc(2026, 11, 24, 9, 5)),
    ("12:00Z", NOW, utc(2026, 11, 24, 12, 0)),  # exactly now (to the second) counts as today's
    ("12:00:01Z", NOW, utc(2026, 11, 23, 12, 0, 1)),  # one second ahead: yesterday's
    ("13:00", NOW, utc(2026, 11, 23, 13, 0)),
    ("23:59:59Z", NOW, utc(2026, 11, 23, 23, 59, 59)),
    ("00:00Z", utc(2026, 11, 24, 0, 0), utc(2026, 11, 24, 0, 0)),  # midnight boundary, exactly now
    ("00:00:01Z", utc(2026, 11, 24, 0, 0), utc(2026, 11, 23, 0, 0, 1)),
    ("23:30", utc(2026, 3, 1, 0, 10), utc(2026, 2, 28, 23, 30)),  # across a month end
    ("23:30", utc(2024, 3, 1, 0, 10), utc(2024, 2, 29, 23, 30)),  # leap day
    ("23:30", utc(2027, 1, 1, 0, 10), utc(2026, 12, 31, 23, 30)),  # across a year end
    # clock times with an offset: 10:00 at +02:00 is 08:00Z
    ("10:00+02:00", NOW, utc(2026, 11, 24, 8, 0)),
    ("10:00+0200", NOW, utc(2026, 11, 24, 8, 0)),
    ("13:30+02:00", NOW, utc(2026, 11, 24, 11, 30)),
    ("14:30+02:00", NOW, utc(2026, 11, 23, 12, 30)),  # 12:30Z today is ahead: yesterday's
    ("07:00-05:00", NOW, utc(2026, 11, 24, 12, 0)),  # exactly now
    ("23:00-05:00", NOW, utc(2026, 11, 24, 4, 0)),  # the offset's calendar day is still the 24th's eve
    # absolute times
    ("2026-11-24T10:00:00Z", NOW, utc(2026, 11, 24, 10, 0)),
    ("2026-11-24T10:00Z", NOW, utc(2026, 11, 24, 10, 0)),
    ("2026-11-24t10:00z", NOW, utc(2026, 11, 24, 10, 0)),
    ("2026-11-24 10:00", NOW, utc(2026, 11, 24, 10, 0)),
    ("2026-11-24  10:00", NOW, utc(2026, 11, 24, 10, 0)),
    ("2026-11-24T10:00:00.999Z", NOW, utc(2026, 11, 24, 10, 0)),
    ("2026-11-24T10:00:00+02:00", NOW, utc(2026, 11, 24, 8, 0)),
    ("2026-11-24T01:00:00+02:00", NOW, utc(2026, 11, 23, 23, 0)),
    ("2026-11-23T22:30:00-05:30", NOW, utc(2026, 11, 24, 4, 0)),
    ("2030-01-01T00:00Z", NOW, utc(2030, 1, 1)),  # resolve_time itself does not judge the future
    # relative
    ("-90m", NOW, utc(2026, 11, 24, 10, 30)),
    ("-2h", NOW, utc(2026, 11, 24, 10, 0)),
    ("-1d", NOW, utc(2026, 11, 23, 12, 0)),
    ("-30s", NOW, utc(2026, 11, 24, 11, 59, 30)),
    ("-0m", NOW, utc(2026, 11, 24, 12, 0)),
    ("-90MIN", NOW, utc(2026, 11, 24, 10, 30)),
    ("90m ago", NOW, utc(2026, 11, 24, 10, 30)),
    ("2h ago", NOW, utc(2026, 11, 24, 10, 0)),
    ("2h AGO", NOW, utc(2026, 11, 24, 10, 0)),
    ("3days ago", NOW, utc(2026, 11, 21, 12, 0)),
    # words
    ("now", NOW, utc(2026, 11, 24, 12, 0)),
    ("NOW", NOW, utc(2026, 11, 24, 12, 0)),
    ("latest", NOW, None),
    ("Latest", NOW, None),
]


@pytest.mark.parametrize(("expression", "now", "expected"), RESOLVES)
def test_resolves(expression: str, now: datetime, expected: datetime | None) -> None:
    assert resolve_time(expression, now=now) == expected


@pytest.mark.parametrize(("expression", "now", "expected"), [row for row in RESOLVES if row[2] is not None])
def test_results_are_utc_and_whole_seconds(expression: str, now: datetime, expected: datetime) -> None:
    result = resolve_time(expression, now=now)
    assert result is not None
    assert result.tzinfo is not None and result.utcoffset() == timedelta(0)
    assert result.microsecond == 0


def test_now_in_another_zone_is_converted_first() -> None:
    tokyo_now = NOW.astimezone(timezone(timedelta(hours=9)))  # 21:00 local on the 24th
    assert resolve_time("10:00Z", now=tokyo_now) == utc(2026, 11, 24, 10, 0)
    assert resolve_time("-1h", now=tokyo_now) == utc(2026, 11, 24, 11, 0)


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        resolve_time("10:00", now=datetime(2026, 11, 24, 12, 0))


BAD = [
    "", "   ", "yesterday", "10", "10:0", "25:00", "10:60", "10:00:61Z", "24:00Z", "2026-11-24", "2026-13-01T10:00Z",
    "2026-02-30T10:00Z", "2026-11-24T10:00+25:00", "10:00+02:99", "+2h", "-2w", "2h", "ago", "h ago", "-h",
    "-99999999d", "-1234567890d", "10:00 PST", "٣:00",
]  # fmt: skip


@pytest.mark.parametrize("expression", BAD)
def test_bad_expressions_name_the_token_and_the_forms(expression: str) -> None:
    with pytest.raises(GrammarError) as caught:
        resolve_time(expression, now=NOW)
    assert caught.value.token == expression
    assert ACCEPTED_FORMS in str(caught.value)
    if expression.strip():
        assert f"'{expression}'" in str(caught.value)


def test_bad_expression_carries_the_callers_usage_and_still_lists_forms() -> None:
    usage = "/dr restore database <env> <time>"
    with pytest.raises(GrammarError) as caught:
        resolve_time("soon", now=NOW, usage=usage)
    assert caught.value.usage == usage
    assert "'soon'" in caught.value.message and ACCEPTED_FORMS in caught.value.message


def test_require_past_refuses_the_future_and_echoes_the_resolved_time() -> None:
    future = utc(2026, 11, 24, 12, 0, 1)
    with pytest.raises(GrammarError) as caught:
        require_past(future, now=NOW, expression="2026-11-24T12:00:01Z")
    assert "is in the future; a restore point must be in the past" in str(caught.value)
    assert "2026-11-24T12:00:01Z" in caught.value.token
    assert require_past(utc(2026, 11, 24, 12, 0), now=NOW, expression="now") == utc(2026, 11, 24, 12, 0)


@pytest.mark.parametrize(
    ("tokens", "start", "expected"),
    [
        (["prod", "2026-11-24", "10:00"], 1, ("2026-11-24 10:00", 2)),
        (["2026-11-24", "10:00:30Z"], 0, ("2026-11-24 10:00:30Z", 2)),
        (["2h", "ago"], 0, ("2h ago", 2)),
        (["2h", "AGO", "x"], 0, ("2h AGO", 2)),
        (["10:00Z", "extra"], 0, ("10:00Z", 1)),
        (["2026-11-24", "prod"], 0, ("2026-11-24", 1)),
        (["-90m"], 0, ("-90m", 1)),
    ],
)
def test_take_time_expression_joins_two_token_forms(tokens: list[str], start: int, expected: tuple[str, int]) -> None:
    assert take_time_expression(tokens, start=start) == expected


def test_help_lists_every_form_and_iso_z_prints_z() -> None:
    text = time_help()
    for form, meaning in TIME_FORMS:
        assert form in text and meaning in text
    assert iso_z(datetime(2026, 11, 24, 10, 0, 5, 999, tzinfo=timezone(timedelta(hours=2)))) == "2026-11-24T08:00:05Z"
