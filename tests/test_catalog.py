"""The runbook catalog: the shipped files load, and every broken file is refused with its file and key path."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbooks.actions import ACTIONS
from runbooks.catalog import (
    CATALOG_DIR,
    CHECKLIST_FILE,
    COMMAND_RUNBOOKS,
    load_catalog,
    load_checklist,
    load_runbook,
    parse_duration,
)
from runbooks.errors import ConfigError, NotFound
from runbooks.templating import render

# A small, valid runbook; each refusal test breaks one thing in a copy of it.
GOOD: dict[str, Any] = {
    "name": "bad",
    "title": "Restore",
    "params": [{"name": "time", "kind": "time", "required": True}],
    "settings": {"q": {"help": "the SELECT the check runs", "example": "SELECT 1"}},
    "steps": [
        {"id": "restore", "title": "Restore", "action": "database.restore_pitr", "guarded": True,
         "params": {"source": "{{ env.database.instance }}", "target": "{{ env.database.instance }}-{{ run.short }}",
                    "restore_time": "{{ cmd.time }}"},
         "records": {"restore_point": "restore_time"}},
        {"id": "cutover", "title": "Cut over", "action": "kubernetes.set_env", "guarded": True,
         "after": ["restore", "integrity"], "marks_restored": True,
         "params": {"deployment": "{{ env.kubernetes.deployment }}", "namespace": "{{ env.kubernetes.namespace }}",
                    "env": {"DB_HOST": "{{ steps.restore.outputs.endpoint }}"}}},
        {"id": "integrity", "title": "Check", "action": "database.integrity_check", "after": ["restore"],
         "params": {"instance": "{{ steps.restore.outputs.instance }}", "query": "{{ env.settings.q }}"},
         "verify": [{"output": "count", "op": ">", "value": 0}]},
        {"id": "report", "title": "Report", "action": "builtin.report", "after": ["cutover", "integrity"],
         "params": {"text": "restored to {{ steps.restore.outputs.restore_time }}"}},
    ],
}


def write(tmp_path: Path, data: dict[str, Any], name: str = "bad.yml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def refused(tmp_path: Path, data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        load_runbook(write(tmp_path, data))
    message = str(info.value)
    assert "bad.yml" in message
    return message


def good() -> dict[str, Any]:
    return copy.deepcopy(GOOD)


# --------------------------------------------------------------------------------------------- shipped files


def test_every_shipped_file_loads_and_every_command_has_its_runbook() -> None:
    catalog = load_catalog()
    files = {p.stem for p in CATALOG_DIR.glob("*.yml")} - {Path(CHECKLIST_FILE).stem}
    assert set(catalog.runbooks) == files
    for command, name in COMMAND_RUNBOOKS.items():
        assert catalog.for_command(command).name == name
    assert "backup-verification" in catalog.runbooks
    assert catalog.runbooks["backup-verification"].recovery is False


def test_every_side_effect_in_the_shipped_runbooks_is_guarded() -> None:
    for runbook in load_catalog().runbooks.values():
        for step in runbook.steps:
            assert step.guarded == ACTIONS[step.action].mutates, (runbook.name, step.id)


def test_recovery_runbooks_mark_restored_and_record_the_restore_point() -> None:
    runbooks = load_catalog().runbooks
    marked = {name: [s.id for s in rb.steps if s.marks_restored] for name, rb in runbooks.items()}
    assert marked["database-pitr"] == ["cutover"]
    assert marked["region-failover"] == ["dns"]
    assert marked["backup-verification"] == []
    pitr = {s.id: s for s in runbooks["database-pitr"].steps}
    assert pitr["restore"].records == {"restore_point": "restore_time"}
    assert set(pitr["report"].after) == {"cutover", "integrity"}
    failover = {s.id: s for s in runbooks["region-failover"].steps}
    assert failover["promote"].records == {"replica_lag_seconds": "replica_lag_seconds"}
    assert failover["scale"].after == failover["promote"].after  # scale runs alongside promotion
    assert set(failover["dns"].after) == {"promote", "scale"}


def test_database_pitr_renders_with_a_real_context() -> None:
    runbook = load_catalog().get("database-pitr")
    when = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    context = {"cmd": {"time": when}, "run": {"id": "R-7", "short": "r7"},
               "env": {"database": {"instance": "rag-engine-prod"}}}
    params = render(runbook.steps[0].params, context)
    assert params == {"source": "rag-engine-prod", "target": "rag-engine-prod-pitr-r7", "restore_time": when}


# The environment as DESIGN.md §6 sketches it, plus the two settings the runbooks document.
DESIGN_ENV: dict[str, Any] = {
    "name": "prod", "tier": "critical",
    "settings": {"integrity_query": "SELECT count(*) FROM documents", "dr_replicas": 3},
    "database": {"provider": "aws-rds", "instance": "rag-engine-prod", "region": "us-west-2",
                 "replica": {"instance": "rag-engine-prod-replica", "region": "us-east-1"}},
    "dns": {"provider": "route53", "zone_id": "Z123", "record": "api.rag-engine.com", "type": "A",
            "dr_target": "203.0.113.10"},
    "kubernetes": {"provider": "kubernetes", "context": "prod", "namespace": "rag-engine",
                   "deployment": "rag-engine-api", "velero_namespace": "velero"},
    "vectors": {"provider": "qdrant", "url": "http://qdrant:6333", "collection": "documents"},
    "objects": {"provider": "s3", "bucket": "rag-engine-documents"},
}


@pytest.mark.parametrize("name", sorted(load_catalog().runbooks))
def test_every_shipped_runbook_renders_against_the_documented_config(name: str) -> None:
    runbook = load_catalog().get(name)
    when = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    cmd = {p.name: (when if p.kind == "time" else "docs/") if p.default is None else p.default
           for p in runbook.params}
    outputs = {s.id: {"outputs": {o: f"<{o}>" for o in ACTIONS[s.action].outputs}} for s in runbook.steps}
    context = {"cmd": cmd, "env": DESIGN_ENV, "run": {"id": "R-7", "short": "r7"},
               "incident": {"id": "INC-1"}, "steps": outputs}
    for step in runbook.steps:
        params = render(step.params, context)
        assert set(params) >= ACTIONS[step.action].required
        assert "{{" not in str(params)


def test_undelete_without_a_time_means_any_deletion() -> None:
    runbook = load_catalog().get("accidental-deletion")
    context = {"cmd": {"prefix": "docs/", "since": None}, "env": DESIGN_ENV,
               "steps": {"undelete": {"outputs": {"restored": 12}}}}
    assert render(runbook.steps[0].params, context)["since"] is None
    assert render(runbook.steps[1].params, context)["text"].endswith("(deleted since any time).")


def test_the_shipped_checklist_has_five_phases_with_items_due_inside_them() -> None:
    checklist = load_catalog().checklist
    bounds = [(p.starts, p.ends) for p in checklist.phases]
    assert bounds == [(timedelta(0), timedelta(minutes=15)), (timedelta(minutes=15), timedelta(minutes=30)),
                      (timedelta(minutes=30), timedelta(hours=4)), (timedelta(hours=4), timedelta(hours=24)),
                      (timedelta(hours=24), timedelta(hours=72))]
    for phase in checklist.phases:
        assert 3 <= len(phase.items) <= 5
        assert all(phase.starts <= item.due <= phase.ends for item in phase.items)


def test_get_unknown_runbook_lists_the_known_ones() -> None:
    with pytest.raises(NotFound) as info:
        load_catalog().get("database-pitrr")
    assert "Did you mean database-pitr?" in str(info.value)
    assert "region-failover" in str(info.value)


# --------------------------------------------------------------------------------------------- refusals


def test_the_good_fixture_loads(tmp_path: Path) -> None:
    assert [s.id for s in load_runbook(write(tmp_path, good())).steps] == ["restore", "cutover", "integrity", "report"]


def test_unknown_keys_are_refused_with_the_expected_keys(tmp_path: Path) -> None:
    data = good()
    data["tite"] = "x"
    data["steps"][1]["gaurded"] = True
    message = refused(tmp_path, data)
    assert "bad.yml: tite: unknown key (expected: name, version, title" in message
    assert "bad.yml: steps[1].gaurded: unknown key (expected: id, title, action, params, guarded" in message


def test_missing_keys_are_refused(tmp_path: Path) -> None:
    data = good()
    del data["steps"][2]["title"]
    assert "steps[2].title: required key is missing" in refused(tmp_path, data)


def test_wrong_types_are_refused_in_plain_words(tmp_path: Path) -> None:
    data = good()
    data["steps"][1]["after"] = "restore"
    assert "steps[1].after: expected a list, e.g. [a, b] (got 'restore')" in refused(tmp_path, data)


def test_unknown_action_suggests_close_ones(tmp_path: Path) -> None:
    data = good()
    data["steps"][0]["action"] = "database.restore_pitrr"
    assert "steps[0].action: unknown action 'database.restore_pitrr' (did you mean database.restore_pitr" \
        in refused(tmp_path, data)


def test_missing_required_action_params_are_refused(tmp_path: Path) -> None:
    data = good()
    del data["steps"][0]["params"]["restore_time"]
    assert ("steps[0].params: missing required parameter restore_time for database.restore_pitr "
            "(expected: restore_time, source, target, use_latest)") in refused(tmp_path, data)


def test_unknown_action_params_are_refused(tmp_path: Path) -> None:
    data = good()
    data["steps"][0]["params"]["restore_tme"] = "{{ cmd.time }}"
    assert ("bad.yml: steps[0].params.restore_tme: unknown parameter for database.restore_pitr "
            "(expected: restore_time, source, target, use_latest)") in refused(tmp_path, data)


def test_after_must_name_an_existing_step(tmp_path: Path) -> None:
    data = good()
    data["steps"][1]["after"] = ["restor"]
    assert "steps[1].after[0]: no step called 'restor' (did you mean restore" in refused(tmp_path, data)


def test_duplicate_step_ids_are_refused(tmp_path: Path) -> None:
    data = good()
    data["steps"][2]["id"] = "cutover"
    assert "steps[2].id: duplicate step id 'cutover' (first used by steps[1])" in refused(tmp_path, data)


def test_dependency_cycles_are_refused(tmp_path: Path) -> None:
    data = good()
    data["steps"][0]["after"] = ["report"]
    message = refused(tmp_path, data)
    assert "steps[0].after: dependency cycle restore → report → cutover → restore (each waits for the next)" \
        in message


def test_a_self_dependency_is_refused(tmp_path: Path) -> None:
    data = good()
    data["steps"][3]["after"] = ["report"]
    assert "steps[3].after[0]: a step cannot wait for itself" in refused(tmp_path, data)


def test_step_outputs_need_an_after_dependency(tmp_path: Path) -> None:
    data = good()
    data["steps"][1]["after"] = []
    assert ("steps[1].params.env.DB_HOST: {{ steps.restore.outputs.endpoint }}: step 'cutover' does not wait "
            "for 'restore'; add restore to its after: list") in refused(tmp_path, data)


def test_transitive_dependencies_are_enough(tmp_path: Path) -> None:
    data = good()  # report waits for cutover, which waits for restore
    data["steps"][3]["after"] = ["cutover"]
    data["steps"][3]["params"]["text"] = "{{ steps.restore.outputs.endpoint }}"
    assert load_runbook(write(tmp_path, data)).steps[3].after == ("cutover",)


def test_a_check_of_what_a_step_made_decides_before_it_is_put_to_use(tmp_path: Path) -> None:
    """The shape database-pitr used to have: the cut-over and the integrity check both right after the restore,
    side by side, so prod could be pointed at data that then fails the check."""
    data = good()
    data["steps"][1]["after"] = ["restore"]
    assert ("steps[1].after: 'cutover' uses what 'restore' made while 'integrity' is still checking it; add "
            "integrity to its after: list so the check decides before the change") in refused(tmp_path, data)


def test_the_shipped_pitr_checks_the_data_before_the_cut_over() -> None:
    from runbooks.catalog import load_catalog

    pitr = load_catalog().get("database-pitr")
    cutover = next(s for s in pitr.steps if s.id == "cutover")
    assert "integrity" in cutover.after


def test_step_outputs_must_exist(tmp_path: Path) -> None:
    data = good()
    data["steps"][1]["params"]["env"]["DB_HOST"] = "{{ steps.restore.outputs.endpont }}"
    assert ("steps[1].params.env.DB_HOST: {{ steps.restore.outputs.endpont }}: database.restore_pitr "
            "(step 'restore') has no output 'endpont'") in refused(tmp_path, data)


def test_cmd_references_must_be_declared_params(tmp_path: Path) -> None:
    data = good()
    data["steps"][0]["params"]["restore_time"] = "{{ cmd.tme }}"
    assert "steps[0].params.restore_time: {{ cmd.tme }}: cmd.tme is not a parameter of bad (declared: time" \
        in refused(tmp_path, data)


def test_unknown_template_roots_and_fields_are_refused(tmp_path: Path) -> None:
    data = good()
    data["steps"][0]["params"]["source"] = "{{ enviroment.database.instance }}"
    data["steps"][0]["params"]["target"] = "{{ env.databse.instance }}-{{ run.shrt }}"
    message = refused(tmp_path, data)
    assert "steps[0].params.source: {{ enviroment.database.instance }}: unknown root 'enviroment'" in message
    assert "steps[0].params.target: {{ env.databse.instance }}: env has no 'databse' (did you mean database" \
        in message
    assert "steps[0].params.target: {{ run.shrt }}: run has no 'shrt'" in message


def test_malformed_templates_are_refused_with_their_key_path(tmp_path: Path) -> None:
    data = good()
    data["steps"][1]["params"]["env"]["DB_HOST"] = "{{ steps.restore.outputs.endpoint"
    assert "steps[1].params.env.DB_HOST: unbalanced braces" in refused(tmp_path, data)


def test_verify_checks_must_name_an_output_of_the_action(tmp_path: Path) -> None:
    data = good()
    data["steps"][2]["verify"] = [{"output": "rows", "op": "=>", "value": 0}]
    message = refused(tmp_path, data)
    assert "steps[2].verify[0].output: database.integrity_check has no output 'rows' (outputs: count)" in message
    assert "steps[2].verify[0].op: unknown operator '=>'" in message


def test_mutating_steps_must_be_guarded(tmp_path: Path) -> None:
    data = good()
    data["steps"][0]["guarded"] = False
    assert "steps[0].guarded: database.restore_pitr changes things, so the step must be `guarded: true`" \
        in refused(tmp_path, data)


def test_builtins_are_never_guarded(tmp_path: Path) -> None:
    data = good()
    data["steps"][3]["guarded"] = True
    assert "steps[3].guarded: builtin.report is run by drbot itself and is never guarded" in refused(tmp_path, data)


def test_guarding_a_read_only_provider_action_is_allowed(tmp_path: Path) -> None:
    data = good()
    data["steps"][2]["guarded"] = True
    assert load_runbook(write(tmp_path, data)).steps[2].guarded is True


def test_records_must_name_a_known_fact_and_an_output(tmp_path: Path) -> None:
    data = good()
    data["steps"][0]["records"] = {"restore_pont": "restore_tim"}
    message = refused(tmp_path, data)
    assert "steps[0].records.restore_pont: unknown fact (expected: replica_lag_seconds, restore_point)" in message
    assert "steps[0].records.restore_pont: database.restore_pitr has no output 'restore_tim'" in message


def test_a_drill_cannot_mark_the_service_restored(tmp_path: Path) -> None:
    data = good()
    data["recovery"] = False
    assert "steps[1].marks_restored: bad is not a recovery runbook" in refused(tmp_path, data)


def test_the_name_must_match_the_file(tmp_path: Path) -> None:
    data = good()
    data["name"] = "database-pitr"
    assert "bad.yml: name: 'database-pitr' must match the file name ('bad')" in refused(tmp_path, data)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = good()
    data["steps"][0]["params"]["restore_tme"] = "x"
    data["steps"][3]["guarded"] = True
    message = refused(tmp_path, data)
    assert "steps[0].params.restore_tme" in message and "steps[3].guarded" in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("name: bad\nsteps: [\n  {id: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yml:\d+:\d+: not valid YAML"):
        load_runbook(path)


# --------------------------------------------------------------------------------------------- checklist + catalog

CHECKLIST: dict[str, Any] = {
    "phases": [
        {"id": "immediate", "title": "Immediate", "starts": "0m", "ends": "15m",
         "items": [{"id": "ack", "text": "Acknowledge", "due": "5m"}]},
        {"id": "recovery", "title": "Recovery", "starts": "15m", "ends": "4h",
         "items": [{"id": "run", "text": "Run it", "due": "1h30m"}]},
    ],
}


def test_checklist_durations_parse() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    with pytest.raises(ValueError, match="expected e.g. 15m"):
        parse_duration("15 minutes")


def test_checklist_loads_durations(tmp_path: Path) -> None:
    checklist = load_checklist(write(tmp_path, CHECKLIST, CHECKLIST_FILE))
    assert checklist.phases[1].items[0].due == timedelta(minutes=90)


@pytest.mark.parametrize(("due", "expected"), [
    ("15 min", "phases[0].items[0].due: '15 min' is not a duration"),
    (15, "phases[0].items[0].due: write durations with a unit"),
    ("20m", "phases[0].items[0].due: 0:20:00 is outside the phase"),
])
def test_bad_checklist_items_are_refused(tmp_path: Path, due: object, expected: str) -> None:
    data = copy.deepcopy(CHECKLIST)
    data["phases"][0]["items"][0]["due"] = due
    with pytest.raises(ConfigError) as info:
        load_checklist(write(tmp_path, data, CHECKLIST_FILE))
    assert f"{CHECKLIST_FILE}: {expected}" in str(info.value)


def test_duplicate_checklist_item_ids_are_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(CHECKLIST)
    data["phases"][1]["items"][0]["id"] = "ack"
    with pytest.raises(ConfigError, match=r"phases\[1\]\.items\[0\]\.id: duplicate item id 'ack'"):
        load_checklist(write(tmp_path, data, CHECKLIST_FILE))


def test_extra_dirs_add_and_replace_runbooks(tmp_path: Path) -> None:
    ours = good()
    ours["name"] = "database-pitr"
    ours["title"] = "Our own PITR"
    write(tmp_path, ours, "database-pitr.yml")
    extra = good()
    extra["name"] = "our-drill"
    write(tmp_path, extra, "our-drill.yml")
    catalog = load_catalog(extra_dirs=[tmp_path])
    assert catalog.get("database-pitr").title == "Our own PITR"
    assert catalog.sources["database-pitr"] == tmp_path / "database-pitr.yml"
    assert "our-drill" in catalog.runbooks and "region-failover" in catalog.runbooks


def test_a_broken_extra_runbook_stops_the_catalog(tmp_path: Path) -> None:
    data = good()
    data["name"] = "broken"
    data["steps"][0]["action"] = "database.nuke"
    write(tmp_path, data, "broken.yml")
    with pytest.raises(ConfigError, match=r"broken\.yml: steps\[0\]\.action: unknown action 'database\.nuke'"):
        load_catalog(extra_dirs=[tmp_path])


def test_a_directory_needs_the_checklist(tmp_path: Path) -> None:
    write(tmp_path, good())
    with pytest.raises(ConfigError, match="no incident-checklist.yml found"):
        load_catalog(tmp_path)
    write(tmp_path, CHECKLIST, CHECKLIST_FILE)
    assert set(load_catalog(tmp_path).runbooks) == {"bad"}
