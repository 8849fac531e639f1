"""Templates: what a runbook step's parameters become once a run knows its environment and outputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runbooks.errors import CommandError
from runbooks.templating import TemplateError, format_value, references, render

WHEN = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

CONTEXT: dict[str, Any] = {
    "cmd": {"time": WHEN, "snapshot": "latest", "since": None},
    "env": {
        "name": "prod",
        "database": {"instance": "rag-engine-prod", "replica": {"instance": "rag-engine-prod-replica"}},
        "settings": {"dr_replicas": 3},
        "kubernetes": {"namespace": "rag-engine", "context": "prod"},
    },
    "run": {"id": "R-7", "short": "r7"},
    "steps": {"restore": {"outputs": {"endpoint": "db.example:5432", "keys": ["a", "b"]}}},
}


def test_a_whole_string_template_keeps_the_values_type() -> None:
    assert render("{{ cmd.time }}", CONTEXT) == WHEN
    assert isinstance(render("{{ cmd.time }}", CONTEXT), datetime)
    assert render("{{ env.settings.dr_replicas }}", CONTEXT) == 3
    assert render("  {{env.settings.dr_replicas}}  ", CONTEXT) == "  3  "  # surrounding text makes it a string


def test_embedded_templates_are_formatted_with_datetimes_as_iso_z() -> None:
    assert render("{{ env.database.instance }}-pitr-{{ run.short }}", CONTEXT) == "rag-engine-prod-pitr-r7"
    assert render("restore to {{ cmd.time }}", CONTEXT) == "restore to 2026-11-24T10:00:00Z"
    other_zone = datetime(2026, 11, 24, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert format_value(other_zone) == "2026-11-24T10:00:00Z"


def test_dicts_and_lists_render_recursively_and_other_values_pass_through() -> None:
    value = {"env": {"DB_HOST": "{{ steps.restore.outputs.endpoint }}"},
             "include_namespaces": ["{{ env.kubernetes.namespace }}"], "ttl": 60, "flag": True}
    assert render(value, CONTEXT) == {"env": {"DB_HOST": "db.example:5432"},
                                      "include_namespaces": ["rag-engine"], "ttl": 60, "flag": True}
    assert render("{{ steps.restore.outputs.keys.1 }}", CONTEXT) == "b"


def test_a_missing_path_names_the_path_and_what_is_there() -> None:
    with pytest.raises(TemplateError) as info:
        render({"a": ["{{ env.database.instanse }}"]}, CONTEXT)
    assert info.value.path == "env.database.instanse"
    assert "env.database.instanse is not set" in str(info.value)
    assert "instance, replica" in str(info.value)  # the keys that do exist, for the typo
    assert isinstance(info.value, CommandError)


def test_a_missing_intermediate_is_reported_too() -> None:
    with pytest.raises(TemplateError, match=r"steps\.integrity\.outputs\.count is not set"):
        render("{{ steps.integrity.outputs.count }}", CONTEXT)


def test_default_filter_applies_only_when_the_value_is_missing_or_none() -> None:
    assert render("{{ env.kubernetes.velero_namespace | default('velero') }}", CONTEXT) == "velero"
    assert render("{{ env.settings.dr_replicas | default(9) }}", CONTEXT) == 3
    assert render("{{ cmd.since | default(cmd.time) }}", CONTEXT) == WHEN
    assert render("{{ env.kubernetes.dr_context | default(env.kubernetes.context) }}", CONTEXT) == "prod"
    with pytest.raises(TemplateError, match="env.kubernetes.nope"):
        render("{{ env.kubernetes.dr_context | default(env.kubernetes.nope) }}", CONTEXT)


def test_none_cannot_be_embedded_in_text_but_is_kept_alone() -> None:
    assert render("{{ cmd.since }}", CONTEXT) is None
    with pytest.raises(TemplateError, match="cmd.since"):
        render("since {{ cmd.since }}", CONTEXT)


@pytest.mark.parametrize("text", ["{{ }}", "{{ env.database.instance", "{{ a b }}", "{{ x | upper }}",
                                  "{{ x | default(oops oops) }}", "x }} y"])
def test_malformed_templates_are_refused_with_the_right_form(text: str) -> None:
    with pytest.raises(TemplateError, match=r"expected \{\{ path\.to\.value \}\}|default"):
        references(text)


def test_references_finds_nested_paths_and_fallbacks() -> None:
    value = {
        "target": "{{ env.database.instance }}-pitr-{{ run.short }}",
        "env": {"DB_HOST": "{{ steps.restore.outputs.endpoint }}"},
        "list": [1, ["{{ cmd.time }}"], {"deep": "{{ env.x | default(env.y) }}"}],
        "plain": "no templates here",
    }
    assert references(value) == {"env.database.instance", "run.short", "steps.restore.outputs.endpoint",
                                 "cmd.time", "env.x", "env.y"}
    assert references("{{ a | default('literal.not.a.path') }}") == {"a"}


@given(st.text().filter(lambda s: "{" not in s and "}" not in s))
def test_text_without_templates_renders_to_itself(text: str) -> None:
    assert render(text, CONTEXT) == text
    assert references(text) == set()
