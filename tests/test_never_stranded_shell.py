"""Never stranded, seen from `drbot shell`: a real subprocess, a drbot.yml written by the test, piped input.

What a person at the terminal sees when something unexpected is raised inside a run: a decided run (failed, or
paused with Retry/Skip/Abort) and an error id in the chat, never a traceback; the traceback is in
`drbot-shell.log` beside the database, under the same id. And what a drbot.yml without its optional blocks does to
the PITR story: it still runs, or it is refused at once with the missing key named.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import SANDBOX_CONFIG
from integrations.sandbox.database import create_count
from runbooks.store import Store
from tests.shapes import DESIGN_SKETCH
from tests.shellrun import ROOT, ShellProcess, run_shell

pytestmark = pytest.mark.slow

REQUEST = "/dr restore database prod 10:00Z"
ONE_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+: ")
"""The start of every stderr line: one line per log record, never a traceback's continuation."""


def write_config(folder: Path, data: dict[str, Any]) -> dict[str, str]:
    path = folder / "drbot.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return {"DRBOT_CONFIG": str(path)}


def assert_no_traceback(stdout: str, stderr: str) -> None:
    for name, text in (("stdout", stdout), ("stderr", stderr)):
        assert "Traceback" not in text and 'File "' not in text, f"a traceback on {name}:\n{text}"
    for line in stderr.splitlines():
        assert ONE_LOG_LINE.match(line), f"stderr has a line that is not a log record's one line: {line!r}"


def assert_logged(folder: Path, error_id: str) -> None:
    log = folder / "drbot-shell.log"
    assert log.exists(), f"no drbot-shell.log beside the database: {sorted(p.name for p in folder.iterdir())}"
    text = log.read_text()
    assert "Traceback" in text and "SandboxCrash" in text, text
    assert f"error {error_id}" in text, f"the chat said error {error_id}; the log has:\n{text}"


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Callable[..., ShellProcess]]:
    sessions: list[ShellProcess] = []

    def start(**kwargs: Any) -> ShellProcess:
        session = ShellProcess(tmp_path, **kwargs)
        sessions.append(session)
        return session

    yield start
    for session in sessions:
        session.close()


def approve_button(sh: ShellProcess, run_id: str) -> int:
    """The Approve button printed under the approval request of `run_id`."""
    found = sh.expect(rf"asks to run database-pitr on prod \({run_id}\).*\n\s+\[(\d+)\] Approve", since_send=False)
    return int(found.group(1))


def request_again_and_finish(sh: ShellProcess) -> None:
    """The same request after the troubled R-1 is accepted as R-2 (not refused as `already …`) and finishes."""
    sh.send(":as alice")
    sh.send(REQUEST)
    sh.expect(r"requested database-pitr on prod \(R-2\)")
    assert "already" not in sh.buffer[sh.mark:], sh.buffer[sh.mark:]
    sh.send(":as bob")
    sh.send(f":press {approve_button(sh, 'R-2')}")
    sh.expect(r"R-2 \(database-pitr\) finished successfully", since_send=False)


# ------------------------------------------------------------------------------------ 1. crashes, per point


def crash_config(at: str) -> dict[str, Any]:
    data = copy.deepcopy(SANDBOX_CONFIG)
    data["environments"]["prod"]["database"]["failures"] = {
        "restore_pitr": {"at": at, "crash": True, "times": 1, "message": "boom: the SDK said something unexpected"}}
    return data


@pytest.mark.parametrize("at", ["plan", "preflight"])
def test_a_crash_before_any_change_fails_the_run_visibly(
        shell: Callable[..., ShellProcess], tmp_path: Path, at: str) -> None:
    sh = shell(user="alice", extra_env=write_config(tmp_path, crash_config(at)))
    sh.send(REQUEST)
    stopped = sh.expect(r"R-1 \(database-pitr on prod\) stopped: .*Error ([0-9a-f]{8})\.")
    error_id = stopped.group(1)
    assert "Nothing was changed" in stopped.group(0) and "SandboxCrash" in stopped.group(0), stopped.group(0)
    assert "Approve" not in sh.buffer, "no approval is asked for a run that could not be planned"
    sh.send("/dr status")
    sh.expect(r"R-1 database-pitr on prod: failed .*`/dr retry R-1`")

    request_again_and_finish(sh)
    assert sh.close() == 0
    assert_no_traceback(sh.buffer, sh.errors)
    assert f"error {error_id}" in sh.errors, "stderr names the error once, on one line"
    assert_logged(tmp_path, error_id)
    store = Store(f"sqlite:///{tmp_path / 'drbot.db'}")
    assert store.get_run("R-1").status.value == "failed"  # type: ignore[union-attr]
    assert create_count(store, target="rag-engine-prod-pitr-r1") == 0, "nothing was changed"
    assert create_count(store, target="rag-engine-prod-pitr-r2") == 1


@pytest.mark.parametrize("at", ["start", "poll", "verify"])
def test_a_crash_after_approval_pauses_and_a_retry_finishes(
        shell: Callable[..., ShellProcess], tmp_path: Path, at: str) -> None:
    sh = shell(user="alice", extra_env=write_config(tmp_path, crash_config(at)))
    sh.send(REQUEST)
    sh.send(":as bob")
    sh.send(f":press {approve_button(sh, 'R-1')}")
    step = sh.expect(r"Point-in-time restore into a new instance: failed.*unexpected SandboxCrash inside drbot: "
                     r"boom.*\(error ([0-9a-f]{8})\)", since_send=False)
    error_id = step.group(1)
    paused = sh.expect(r"R-1 paused: (.*)\n\s+\[(\d+)\] Retry  \[\d+\] Skip  \[\d+\] Abort", since_send=False)
    assert f"error {error_id}" in paused.group(1), paused.group(0)
    sh.send(":as carol")
    sh.send(f":press {paused.group(2)}")
    sh.expect(r"R-1 \(database-pitr\) finished successfully")

    request_again_and_finish(sh)
    assert sh.close() == 0
    assert_no_traceback(sh.buffer, sh.errors)
    assert f"error {error_id}" in sh.errors, "stderr names the error once, on one line"
    assert_logged(tmp_path, error_id)
    store = Store(f"sqlite:///{tmp_path / 'drbot.db'}")
    assert [store.get_run(r).status.value for r in ("R-1", "R-2")] == ["succeeded", "succeeded"]  # type: ignore[union-attr]
    assert create_count(store, target="rag-engine-prod-pitr-r1") == 1, "the retry re-attached: no second create"


# ------------------------------------------------------------------------------------ 2. DESIGN §6's sketch


def test_the_design_sketch_restores_and_says_the_data_was_not_checked(tmp_path: Path) -> None:
    data = yaml.safe_load(DESIGN_SKETCH)
    prod = data["environments"]["prod"]
    assert "settings" not in prod
    for resource in ("database", "dns", "kubernetes", "vectors", "objects"):
        prod[resource]["provider"] = "sandbox"
    prod["approvals"]["approvers"] = ["alice", "bob"]
    env = write_config(tmp_path, data)

    session = run_shell(tmp_path, f"{REQUEST}\n:as bob\n:press 1\n", extra_env=env, timeout=120)
    assert session.code == 0, session.stderr
    assert "R-1 (database-pitr) finished successfully" in session.output, session.output
    plan = session.output[session.output.index("Plan "):session.output.index("Pre-flight passed")]
    skipped = re.search(r"2\. Check the restored data.*\n\s+will not run: .*", plan)
    assert skipped and "environments.prod.settings.integrity_query" in skipped.group(0), plan
    assert "Check the restored data: not run" in session.output
    assert_no_traceback(session.output, session.stderr)

    timeline = run_shell(tmp_path, "/dr timeline\n", extra_env=env, timeout=60)
    assert "NOT DONE: Check the restored data (R-1) did not run" in timeline.output, timeline.output
    assert "environments.prod.settings.integrity_query" in timeline.output
    store = Store(f"sqlite:///{tmp_path / 'drbot.db'}")
    steps = {s.step_id: s.status.value for s in store.steps_for(run_id="R-1")}
    assert steps == {"restore": "succeeded", "integrity": "skipped", "cutover": "succeeded", "report": "succeeded"}


# ------------------------------------------------------------------------------------ 3. the shipped example, thinned

REMOVALS: dict[str, str | None] = {
    "environments.prod.settings": None,
    "environments.staging.settings": None,
    "pagerduty": None,
    "slack": None,
    "tiers": None,
    "environments.prod.dns": None,
    "environments.prod.kubernetes": "environments.prod.kubernetes",
    "environments.prod.vectors": None,
    "environments.prod.objects": None,
    "environments.prod.pagerduty": None,
}
"""Optional block removed → the drbot.yml key a refusal names, or None when database-pitr still runs."""


def example_without(dotted: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "drbot.example.yml").read_text())
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    assert last in node, f"drbot.example.yml has no {dotted} any more; update REMOVALS"
    del node[last]
    return data


@pytest.mark.parametrize("removed", list(REMOVALS))
def test_the_example_without_an_optional_block(
        shell: Callable[..., ShellProcess], tmp_path: Path, removed: str) -> None:
    sh = shell(user="alice", extra_env=write_config(tmp_path, example_without(removed)))
    sh.send(REQUEST)
    answer = sh.expect(r"\[(\d+)\] Approve|Refused, nothing was started: .*")
    missing = REMOVALS[removed]
    if missing is not None:
        assert answer.group(1) is None, f"without {removed} the request should be refused, got:\n{sh.buffer}"
        assert missing in answer.group(0) and "drbot.yml" in answer.group(0), answer.group(0)
        assert sh.close() == 0
        assert Store(f"sqlite:///{tmp_path / 'drbot.db'}").list_incidents() == [], "a refusal changes nothing"
    else:
        sh.send(":as U0BOB")
        sh.send(f":press {answer.group(1)}")
        sh.expect(r"R-1 \(database-pitr\) finished successfully")
        if removed == "environments.prod.settings":
            assert re.search(r"will not run: .*environments\.prod\.settings\.integrity_query", sh.buffer)
            assert "Check the restored data: not run" in sh.buffer
        else:
            assert "Check the restored data: done" in sh.buffer
        assert sh.close() == 0
    assert_no_traceback(sh.buffer, sh.errors)
