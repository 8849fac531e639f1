"""Crash safety: kill -9 `drbot shell` while a sandbox restore is in flight, start it again, and the run
finishes with exactly one create for its target and a timeline with no gap and no duplicate."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from integrations.sandbox.database import create_count
from runbooks.store import Store
from tests.shellrun import ShellProcess

pytestmark = pytest.mark.slow


def test_kill9_mid_restore_resumes_once(tmp_path: Path) -> None:
    # Speed 100: the sandbox PITR takes ~12 s, long enough to be killed in the middle of it.
    first = ShellProcess(tmp_path, user="alice", speed=100)
    try:
        first.send("/dr restore database prod -3h")
        first.expect(r"\[1\] Approve")
        first.send(":as bob")
        first.send(":press 1")
        first.expect(r"restore_pitr started on rag-engine-prod-pitr-r1")
        first.expect(r"Point-in-time restore into a new instance: creating")
    finally:
        first.kill9()

    store = Store(f"sqlite:///{tmp_path / 'drbot.db'}")
    assert store.get_run("R-1").status.value == "running"  # type: ignore[union-attr]
    assert create_count(store, target="rag-engine-prod-pitr-r1") == 1

    second = ShellProcess(tmp_path, user="alice", speed=100)
    try:
        second.expect(r"Resuming R-1 \(database-pitr on prod, running\)", since_send=False)
        second.expect(r"R-1 \(database-pitr\) finished successfully", timeout=120, since_send=False)
    finally:
        assert second.close() == 0

    run = store.get_run("R-1")
    assert run is not None and run.status.value == "succeeded"
    assert create_count(store, target="rag-engine-prod-pitr-r1") == 1, "the restarted run re-attached"

    events = store.events_for(incident_id="INC-1")
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no gap in the timeline"
    lines = Counter((e.kind, e.run_id, e.text) for e in events)
    assert [k for k, n in lines.items() if n > 1] == [], "no duplicate line in the timeline"
    started = Counter(e.data.get("step_id") for e in events if e.kind == "step.started")
    completed = Counter(e.data.get("step_id") for e in events if e.kind == "step.completed")
    assert started == completed == Counter({"restore": 1, "cutover": 1, "integrity": 1, "report": 1})
    times = [e.at for e in events]
    assert times == sorted(times), "timestamps never go backwards"
    assert store.verify_audit()[1] is None
    incident = store.get_incident("INC-1")
    assert incident is not None and incident.restored_at is not None
