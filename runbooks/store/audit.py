"""The audit chain: append-only rows, each carrying the hash of the row before it, so an edit or a deletion
anywhere breaks every later hash and `drbot audit verify` names the first row that does not match.

Every timeline event is also an audit row, written in the same transaction (`runbooks.store.events`); refusals that
belong to no incident are written here directly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runbooks.store.base import StoreBase
from runbooks.store.tables import audit, events, ts

GENESIS = "0" * 64


def audit_hash(*, prev_hash: str, seq: int, at: str, actor: str, action: str, subject: str, data: str) -> str:
    body = json.dumps([prev_hash, seq, at, actor, action, subject, data], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class AuditProblem:
    seq: int
    reason: str


def write_audit(conn: Connection, *, at: str, actor: str, action: str, subject: str, data: str) -> None:
    """Chain one row onto the newest, inside the caller's write transaction (which orders writers)."""
    last = conn.execute(sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).first()
    seq = 1 if last is None else int(last.seq) + 1
    prev = GENESIS if last is None else str(last.hash)
    digest = audit_hash(prev_hash=prev, seq=seq, at=at, actor=actor, action=action, subject=subject, data=data)
    conn.execute(audit.insert(), {"seq": seq, "at": at, "actor": actor, "action": action, "subject": subject,
                                  "data": data, "prev_hash": prev, "hash": digest})


class AuditStore(StoreBase):
    def audit_refusal(self, *, at: datetime, actor: str, action: str, subject: str, data: Mapping[str, Any]) -> None:
        """Refusals that belong to no incident (unknown request id, tampered value) still reach the chain."""
        with self.tx() as conn:
            write_audit(conn, at=ts(at), actor=actor, action=action, subject=subject,
                        data=json.dumps(dict(data), sort_keys=True, default=str))

    def verify_audit(self) -> tuple[int, AuditProblem | None]:
        """Walk the chain; return (rows checked, first problem or None)."""
        prev = GENESIS
        expected_seq = 1
        count = 0
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(audit).order_by(audit.c.seq)):
                count += 1
                if row.seq != expected_seq:
                    return count, AuditProblem(expected_seq, f"row {expected_seq} is missing (next row is {row.seq})")
                if row.prev_hash != prev:
                    return count, AuditProblem(row.seq, "its prev_hash does not match the hash of the row before")
                digest = audit_hash(prev_hash=row.prev_hash, seq=row.seq, at=row.at, actor=row.actor,
                                    action=row.action, subject=row.subject, data=row.data)
                if digest != row.hash:
                    return count, AuditProblem(row.seq, "its content does not match its hash (edited after writing)")
                prev = row.hash
                expected_seq += 1
            # Each event is written with its audit row: an event the chain does not cover means audit rows were
            # cut off the end (which the chain alone cannot show, having no row after them).
            newest_event = conn.execute(sa.select(sa.func.max(events.c.seq))).scalar()
            if newest_event is not None:
                covered = conn.execute(sa.select(audit.c.data).where(
                    audit.c.data.like(f'{{"data": %, "event": {int(newest_event)}, %'))).first()
                if covered is None:
                    return count, AuditProblem(count + 1, f"event {newest_event} has no audit row: the newest audit "
                                               "rows were deleted")
        return count, None

    def audit_head(self) -> tuple[int, str]:
        """The newest row's number and hash: record it elsewhere (a ticket, the thread) to anchor the chain."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).first()
        return (0, GENESIS) if row is None else (int(row.seq), str(row.hash))
