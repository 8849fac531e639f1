"""`drbot audit verify` as an operator runs it: a separate process, configured only by DRBOT_DATABASE_URL,
answering with an exit code a cron job can alert on and a line that names the broken row."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from runbooks.models import Event
from runbooks.store import Store

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def fill(url: str, *, notes: int) -> int:
    """An incident, `notes` timeline lines and one refusal; returns the number of audit rows written."""
    store = Store(url)
    try:
        incident, *_ = store.create_incident(title="db corrupted", severity="sev1", environment="prod",
                                            tier="critical", opened_by="alice", opened_at=T0, detected_at=T0,
                                            event_text="alice opened db corrupted")
        for n in range(notes):
            store.append_event(Event(incident_id=incident.id, at=T0 + timedelta(minutes=n), actor="alice",
                                     kind="note", text=f"note {n}"))
        store.audit_refusal(at=T0, actor="mallory", action="approval.refused", subject="AR-9", data={"n": 1})
    finally:
        store.close()
    return notes + 2


def audit_verify(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT),
           "DRBOT_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "bot.cli", "audit", "verify"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_audit_verify_on_sqlite_passes_then_names_the_edited_row(tmp_path: Path) -> None:
    db = tmp_path / "drbot.db"
    url = f"sqlite:///{db}"
    rows = fill(url, notes=8)

    ok = audit_verify(url, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert f"audit chain OK: {rows} rows verified" in ok.stdout

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit SET data = replace(data, 'note 4', 'nothing') WHERE seq = 6")
    broken = audit_verify(url, tmp_path)
    assert broken.returncode == 1, broken.stderr
    assert "audit chain BROKEN at row 6" in broken.stdout
    assert "does not match its hash" in broken.stdout


def test_audit_verify_on_sqlite_names_a_deleted_row(tmp_path: Path) -> None:
    db = tmp_path / "drbot.db"
    fill(f"sqlite:///{db}", notes=8)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit WHERE seq = 3")
    broken = audit_verify(f"sqlite:///{db}", tmp_path)
    assert broken.returncode == 1
    assert "audit chain BROKEN at row 3: row 3 is missing (next row is 4)" in broken.stdout


@pytest.mark.postgres
def test_audit_verify_on_postgres(fresh_pg_url: str, tmp_path: Path) -> None:
    # A database of its own: the session's shared drbot_test may hold other tests' rows.
    rows = fill(fresh_pg_url, notes=5)
    ok = audit_verify(fresh_pg_url, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert f"audit chain OK: {rows} rows verified" in ok.stdout

    engine = sa.create_engine(fresh_pg_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE audit SET prev_hash = :h WHERE seq = 4"), {"h": "e" * 64})
    finally:
        engine.dispose()
    broken = audit_verify(fresh_pg_url, tmp_path)
    assert broken.returncode == 1, broken.stderr
    assert "audit chain BROKEN at row 4" in broken.stdout
    assert "prev_hash does not match" in broken.stdout
    assert not (tmp_path / "drbot.db").exists()  # it used the URL it was given, not the SQLite default
