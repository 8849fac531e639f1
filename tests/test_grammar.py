"""Every `/dr` form parses to its typed command; every mistake is a GrammarError naming the token and the usage."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbooks.errors import GrammarError
from runbooks.grammar import (
    COMMANDS,
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
    RunRunbook,
    Status,
    Timeline,
    UndeleteObjects,
    help_text,
    parse,
    tokenize,
)

NOW = datetime(2026, 11, 24, 12, 0, 0, 500000, tzinfo=UTC)
ENVS = ("prod", "staging")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


FORMS: list[tuple[str, Command]] = [
    ("/dr help", Help(topic=None)),
    ("help", Help(topic=None)),
    ("", Help(topic=None)),
    ("/dr", Help(topic=None)),
    ("/dr help restore", Help(topic="restore")),
    ("/DR HELP Time", Help(topic="time")),
    ("help restore database", Help(topic="restore database")),
    ("/dr runbooks", ListRunbooks()),
    ("STATUS", Status()),
    ("/dr incident open DB is down", IncidentOpen(title="DB is down", severity=None, environment=None)),
    ('/dr incident open "DB is down" sev1 prod', IncidentOpen(title="DB is down", severity="sev1", environment="prod")),
    ("incident open API slow prod SEV2", IncidentOpen(title="API slow", severity="sev2", environment="prod")),
    ("incident open API slow Staging", IncidentOpen(title="API slow", severity=None, environment="staging")),
    ("incident open API slow sev3", IncidentOpen(title="API slow", severity="sev3", environment=None)),
    ("incident open “smart quoted title” sev1", IncidentOpen(title="smart quoted title", severity="sev1",
                                                            environment=None)),
    ('incident open "can\'t connect" prod', IncidentOpen(title="can't connect", severity=None, environment="prod")),
    ("incident open issue #42 C:\\data", IncidentOpen(title="issue #42 C:\\data", severity=None, environment=None)),
    ("incident detected 09:42Z", IncidentDetected(at=utc(2026, 11, 24, 9, 42), expression="09:42Z")),
    ("incident detected 20m ago", IncidentDetected(at=utc(2026, 11, 24, 11, 40), expression="20m ago")),
    ("incident impact 09:42Z", IncidentImpact(at=utc(2026, 11, 24, 9, 42), expression="09:42Z")),
    ("incident detected 2026-11-24 11:00", IncidentDetected(at=utc(2026, 11, 24, 11), expression="2026-11-24 11:00")),
    ("incident restored", IncidentRestored()),
    ("incident resolve", IncidentResolve(note="")),
    ("incident resolve rolled back the bad migration", IncidentResolve(note="rolled back the bad migration")),
    ("/dr restore database prod 10:00Z", RestoreDatabase(environment="prod", at=utc(2026, 11, 24, 10),
                                                         expression="10:00Z")),
    ("restore database PROD 13:00", RestoreDatabase(environment="prod", at=utc(2026, 11, 23, 13), expression="13:00")),
    ("restore database prod 2026-11-24 10:00", RestoreDatabase(environment="prod", at=utc(2026, 11, 24, 10),
                                                               expression="2026-11-24 10:00")),
    ('restore database prod "2026-11-24 10:00"', RestoreDatabase(environment="prod", at=utc(2026, 11, 24, 10),
                                                                 expression="2026-11-24 10:00")),
    ("restore database prod 2026-11-24T10:00:00+02:00", RestoreDatabase(
        environment="prod", at=utc(2026, 11, 24, 8), expression="2026-11-24T10:00:00+02:00")),
    ("restore database staging -90m", RestoreDatabase(environment="staging", at=utc(2026, 11, 24, 10, 30),
                                                      expression="-90m")),
    ("restore database prod 2h ago", RestoreDatabase(environment="prod", at=utc(2026, 11, 24, 10),
                                                     expression="2h ago")),
    ("restore database prod now", RestoreDatabase(environment="prod", at=utc(2026, 11, 24, 12), expression="now")),
    ("restore database prod latest", RestoreDatabase(environment="prod", at=None, expression="latest")),
    ("promote replica prod", PromoteReplica(environment="prod")),
    ("failover dns prod", FailoverDns(environment="prod")),
    ("failover region staging", FailoverRegion(environment="staging")),
    ("restore k8s prod", RestoreK8s(environment="prod", backup=None)),
    ("restore k8s prod LATEST", RestoreK8s(environment="prod", backup=None)),
    ("restore k8s prod daily-20261124", RestoreK8s(environment="prod", backup="daily-20261124")),
    ("restore vectors prod", RestoreVectors(environment="prod", snapshot=None)),
    ("restore vectors prod latest", RestoreVectors(environment="prod", snapshot=None)),
    ("restore vectors prod documents-1", RestoreVectors(environment="prod", snapshot="documents-1")),
    ("undelete objects prod docs/", UndeleteObjects(environment="prod", prefix="docs/", since=None, expression="")),
    ("undelete objects prod docs/ 2h ago", UndeleteObjects(environment="prod", prefix="docs/",
                                                           since=utc(2026, 11, 24, 10), expression="2h ago")),
    ("undelete objects prod docs/ latest", UndeleteObjects(environment="prod", prefix="docs/", since=None,
                                                           expression="latest")),
    ("run backup-verification staging", RunRunbook(runbook="backup-verification", environment="staging", params={})),
    ('run database-pitr prod restore_time=10:00Z note="a b" empty=', RunRunbook(
        runbook="database-pitr", environment="prod", params={"restore_time": "10:00Z", "note": "a b", "empty": ""})),
    ("run x prod url=http://h/?a=b", RunRunbook(runbook="x", environment="prod", params={"url": "http://h/?a=b"})),
    ("timeline", Timeline(format="md")),
    ("timeline JSON", Timeline(format="json")),
    ("timeline csv", Timeline(format="csv")),
    ("timeline markdown", Timeline(format="md")),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), FORMS)
def test_every_form_parses(line: str, expected: Command) -> None:
    assert parse(line, now=NOW, environments=ENVS) == expected


def test_without_environments_any_env_is_accepted_and_incident_titles_keep_their_last_word() -> None:
    assert parse("restore database qa -1h", now=NOW) == RestoreDatabase(
        environment="qa", at=utc(2026, 11, 24, 11), expression="-1h")
    assert parse("incident open API slow prod sev1", now=NOW) == IncidentOpen(
        title="API slow prod", severity="sev1", environment=None)


def test_parsed_params_are_read_only() -> None:
    command = parse("run x prod a=1", now=NOW, environments=ENVS)
    assert isinstance(command, RunRunbook)
    with pytest.raises(TypeError):
        command.params["a"] = "2"  # type: ignore[index]


ERRORS: list[tuple[str, str, str]] = [  # line, the token the message must name, the usage it must show
    ("restor database prod 10:00", "restor", "/dr restore database <env> <time>"),
    ("frobnicate", "frobnicate", "/dr timeline [md|json|csv]"),
    ("restore", "'restore' needs one of: database | k8s | vectors", "/dr restore k8s <env> [backup|latest]"),
    ("restore dtabase prod", "dtabase", "/dr restore database <env> <time>"),
    ("incident", "'incident' needs one of: open | detected", "/dr incident open <title…> [sev1|sev2|sev3] [env]"),
    ("incident close", "close", "/dr incident resolve [note…]"),
    ("status now", "now", "/dr status"),
    ("runbooks all", "all", "/dr runbooks"),
    ("help frobnicate", "frobnicate", "/dr help [command|time]"),
    ('incident open "unclosed title sev1', '"unclosed title sev1', "/dr incident open <title…>"),
    ("incident open can't connect", "'t connect", "/dr incident open <title…>"),
    ("incident open", "missing <title…>", "/dr incident open <title…>"),
    ("incident open sev1 prod", "missing <title…>", "/dr incident open <title…>"),
    ("incident open DB down sev4", "sev4", "/dr incident open <title…>"),
    ("incident detected", "missing <time>", "/dr incident detected <time>"),
    ("incident detected soon", "soon", "/dr incident detected <time>"),
    ("incident detected latest", "latest", "/dr incident detected <time>"),
    ("incident detected 2026-11-25T00:00Z", "2026-11-25T00:00Z", "/dr incident detected <time>"),
    ("incident detected 10:00Z extra", "extra", "/dr incident detected <time>"),
    ("incident impact latest", "latest", "/dr incident impact <time>"),
    ("incident impact 2026-11-25T00:00Z", "2026-11-25T00:00Z", "/dr incident impact <time>"),
    ("incident restored now", "now", "/dr incident restored"),
    ("restore database", "missing <env>", "/dr restore database <env> <time>"),
    ("restore database prod", "missing <time>", "/dr restore database <env> <time>"),
    ("restore database qa 10:00", "qa", "/dr restore database <env> <time>"),
    ("restore database prd 10:00", "did you mean 'prod'", "/dr restore database <env> <time>"),
    ('restore database "" 10:00', "empty <env>", "/dr restore database <env> <time>"),
    ("restore database prod yesterday", "yesterday", "/dr restore database <env> <time>"),
    ("restore database prod 25:00", "25:00", "/dr restore database <env> <time>"),
    ("restore database prod 2026-11-24", "2026-11-24", "/dr restore database <env> <time>"),
    ("restore database prod 2030-01-01T00:00Z", "is in the future; a restore point must be in the past",
     "/dr restore database <env> <time>"),
    ("restore database prod 2026-11-24T13:00:00+02:00 x", "x", "/dr restore database <env> <time>"),
    ("restore database prod -99999999999d", "-99999999999d", "/dr restore database <env> <time>"),
    ("restore database prod 10:00 ago", "10:00 ago", "/dr restore database <env> <time>"),
    ("promote replica", "missing <env>", "/dr promote replica <env>"),
    ("promote replica prod now", "now", "/dr promote replica <env>"),
    ("failover dns", "missing <env>", "/dr failover dns <env>"),
    ("failover region dev", "dev", "/dr failover region <env>"),
    ("failover zone prod", "zone", "/dr failover region <env>"),
    ("restore k8s", "missing <env>", "/dr restore k8s <env> [backup|latest]"),
    ("restore k8s prod b1 b2", "b2", "/dr restore k8s <env> [backup|latest]"),
    ("restore vectors prod s1 s2", "s2", "/dr restore vectors <env> [snapshot|latest]"),
    ("undelete objects prod", "missing <prefix>", "/dr undelete objects <env> <prefix> [<time>]"),
    ("undelete objects prod 10:00", "10:00", "/dr undelete objects <env> <prefix> [<time>]"),
    ("undelete objects prod docs/ whenever", "whenever", "/dr undelete objects <env> <prefix> [<time>]"),
    ("undelete objects prod docs/ 2099-01-01T00:00Z", "is in the future", "/dr undelete objects <env> <prefix>"),
    ("undelete objects prod docs/ -1h extra", "extra", "/dr undelete objects <env> <prefix> [<time>]"),
    ("undelete files prod docs/", "files", "/dr undelete objects <env> <prefix> [<time>]"),
    ("run", "missing <runbook>", "/dr run <runbook> <env> [key=value …]"),
    ("run a=b prod", "a=b", "/dr run <runbook> <env> [key=value …]"),
    ("run database-pitr", "missing <env>", "/dr run <runbook> <env> [key=value …]"),
    ("run database-pitr restore_time=10:00", "restore_time=10:00", "/dr run <runbook> <env> [key=value …]"),
    ("run database-pitr prod restore_time", "restore_time", "/dr run <runbook> <env> [key=value …]"),
    ("run database-pitr prod =10:00", "=10:00", "/dr run <runbook> <env> [key=value …]"),
    ("run database-pitr prod t=2026-11-24 10:00", "10:00", "/dr run <runbook> <env> [key=value …]"),
    ("run database-pitr prod a=1 a=2", "'a' is given twice", "/dr run <runbook> <env> [key=value …]"),
    ("run database-pitr prod 1a=x", "1a", "/dr run <runbook> <env> [key=value …]"),
    ("timeline pdf", "pdf", "/dr timeline [md|json|csv]"),
    ("timeline csv json", "json", "/dr timeline [md|json|csv]"),
]


@pytest.mark.parametrize(("line", "token", "usage"), ERRORS)
def test_every_error_names_the_token_and_the_usage(line: str, token: str, usage: str) -> None:
    with pytest.raises(GrammarError) as caught:
        parse(line, now=NOW, environments=ENVS)
    assert token in caught.value.message
    assert usage in caught.value.usage
    assert caught.value.usage in str(caught.value)


def test_unknown_verb_suggests_the_close_one_and_lists_every_command() -> None:
    with pytest.raises(GrammarError) as caught:
        parse("/dr restor database prod 10:00", now=NOW, environments=ENVS)
    assert caught.value.token == "restor"
    assert "did you mean 'restore'?" in caught.value.message
    for spec in COMMANDS:
        assert spec.usage in caught.value.usage


def test_unknown_env_lists_the_known_ones() -> None:
    with pytest.raises(GrammarError) as caught:
        parse("failover dns qa", now=NOW, environments=["prod", "staging", "dr"])
    assert caught.value.token == "qa"
    assert "known: dr, prod, staging" in caught.value.message


def test_bad_time_lists_the_accepted_forms() -> None:
    with pytest.raises(GrammarError) as caught:
        parse("restore database prod 10h", now=NOW, environments=ENVS)
    assert caught.value.token == "10h"
    assert "2026-11-24 10:00" in caught.value.message and "2h ago" in caught.value.message


def test_tokenize_keeps_backslashes_and_hashes_and_reads_smart_quotes() -> None:
    assert tokenize('open “a b” c\\d #7') == ["open", "a b", "c\\d", "#7"]


# --------------------------------------------------------------------------------------------- help


def test_help_lists_every_command_from_the_registry() -> None:
    text = help_text()
    for spec in COMMANDS:
        assert spec.usage in text and spec.summary in text
    assert "/dr help time" in text


def test_help_restore_shows_only_the_restore_forms_with_examples() -> None:
    text = help_text("restore")
    assert "/dr restore database <env> <time>" in text
    assert "/dr restore k8s <env> [backup|latest]" in text
    assert "/dr restore vectors <env> [snapshot|latest]" in text
    assert "/dr restore database prod 10:00Z" in text
    assert "/dr failover" not in text


def test_help_for_one_command_and_for_time() -> None:
    assert help_text("restore database").startswith("/dr restore database <env> <time>")
    assert "/dr restore k8s" not in help_text("restore database")
    assert "yesterday" in help_text("time") and "-90m" in help_text("time")


def test_help_for_unknown_topic_is_a_grammar_error() -> None:
    with pytest.raises(GrammarError) as caught:
        help_text("restre")
    assert caught.value.token == "restre" and "did you mean 'restore'?" in caught.value.message


@pytest.mark.parametrize(
    ("spec_name", "example"), [(spec.name, example) for spec in COMMANDS for example in spec.examples]
)
def test_every_help_example_parses_to_its_command(spec_name: str, example: str) -> None:
    spec = next(spec for spec in COMMANDS if spec.name == spec_name)
    assert type(parse(example, now=NOW, environments=ENVS)) is spec.command


def test_every_command_class_has_usage_summary_and_examples() -> None:
    for spec in COMMANDS:
        assert spec.usage.startswith(f"/dr {spec.name}")
        assert spec.summary and spec.examples


# --------------------------------------------------------------------------------------------- fuzz

_WORDS = [spec_word for spec in COMMANDS for spec_word in spec.words] + [
    "/dr", "prod", "staging", "PROD", "qa", "latest", "now", "sev1", "sev4", "10:00Z", "10:00", "25:99", "2026-11-24",
    "2026-11-24T10:00:00+02:00", "2099-01-01T00:00Z", "-90m", "-99999999999d", "2h", "ago", "key=value", "=x", "a=",
    "=", '"', "'", '"quoted words"', "“", "”", "\\", "#", "docs/", "", " ", "\t", "\u00a0", "9" * 5000,
]  # fmt: skip
_TOKEN = st.one_of(st.sampled_from(_WORDS), st.text(max_size=12))


@settings(max_examples=1000, deadline=None)
@given(tokens=st.lists(_TOKEN, max_size=8), envs=st.one_of(st.none(), st.just(ENVS), st.just(())))
def test_random_lines_raise_nothing_but_grammar_errors(tokens: list[str], envs: tuple[str, ...] | None) -> None:
    line = " ".join(tokens)
    try:
        command = parse(line, now=NOW, environments=envs)
    except GrammarError as error:
        assert error.message and error.usage
        return
    assert isinstance(command, Command)
