"""Jobs cross from the HTTP front to the worker process through a pipe: each must pickle, with the command
parsed once at the ack inside it."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest

from bot.door import Delivery
from bot.slack.jobs import Click, Mention, Publish, SlashCommand
from runbooks import grammar as g

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
EXAMPLES = [example for spec in g.COMMANDS for example in spec.examples]


@pytest.mark.parametrize("typed", EXAMPLES)
def test_every_command_travels_to_the_worker_as_parsed(typed: str) -> None:
    command = g.parse(typed.removeprefix("/dr").strip(), now=NOW, environments=["prod", "staging"])
    job = SlashCommand(command=command, text=typed, user="U0ALICE", channel="C0INC", response_url="https://x",
                       once=Delivery(signature="v0=abc", timestamp=1))
    back = pickle.loads(pickle.dumps(job))
    assert back == job and back.command == command and back.once == job.once


def test_a_run_command_keeps_its_parameters_read_only_after_the_trip() -> None:
    command = g.parse("run backup-verification prod rows=10", now=NOW, environments=["prod"])
    assert isinstance(command, g.RunRunbook)
    back = pickle.loads(pickle.dumps(command))
    assert dict(back.params) == {"rows": "10"}
    with pytest.raises(TypeError):
        back.params["rows"] = "11"  # type: ignore[index]


def test_the_other_jobs_travel_too() -> None:
    for job in (Click("press", {"actions": [{"action_id": "dr_approve", "value": "AR-1"}]}),
                Mention(channel="C0INC", thread=None), Publish(event={"seq": 1, "kind": "pagerduty.triggered"})):
        assert pickle.loads(pickle.dumps(job)) == job


def test_a_shortcut_command_is_one_class_the_grammar_the_help_and_the_catalog_all_read() -> None:
    from runbooks.catalog import COMMAND_RUNBOOKS, load_catalog
    from runbooks.commands import RUNBOOK_COMMANDS, RunbookCommand

    assert set(RUNBOOK_COMMANDS) == set(RunbookCommand.__subclasses__()) and len(RUNBOOK_COMMANDS) == 7
    catalog = load_catalog()
    for command in RUNBOOK_COMMANDS:
        spec = next(s for s in g.COMMANDS if s.command is command)
        assert spec.words == command.words and spec.examples == command.examples
        assert command.usage in g.help_text()
        for example in command.examples:
            parsed = g.parse(example, now=NOW, environments=["prod", "staging"])
            assert type(parsed) is command
            assert parsed.request().runbook == command.runbook_name == COMMAND_RUNBOOKS[command.__name__]
        assert catalog.get(command.runbook_name).name == command.runbook_name
