"""drbot's own tables (SQLAlchemy Core), on SQLite or PostgreSQL with the same code.

DBOS keeps its checkpoints elsewhere and may garbage-collect them; everything people rely on afterwards —
incidents, runs, steps, approvals, checklist ticks, the timeline and the audit chain — lives here.

One module per aggregate, each a class adding its methods to the shared connection in `base`:

    base        the engine, the tables created on first use, `tx()` (the one write transaction)
    tables      table definitions, time format, row → model mapping
    incidents   incidents and their checklists
    runs        runs and their steps
    approvals   approval requests and votes
    events      the timeline; `write_event` for writes that carry an event
    audit       the hash chain every event also lands in
    state       provider state

`Store` is all of them together. Methods are keyword-only and return domain models; a write that carries an event
returns the event as stored (with its `seq`), or None when it stored nothing (a duplicate).
"""

from __future__ import annotations

from runbooks.store.approvals import ApprovalStore
from runbooks.store.audit import GENESIS, AuditProblem, audit_hash
from runbooks.store.events import EventStore
from runbooks.store.incidents import IncidentStore
from runbooks.store.runs import RunStore
from runbooks.store.state import StateStore
from runbooks.store.tables import jsonable

__all__ = ["GENESIS", "AuditProblem", "Store", "audit_hash", "jsonable"]


class Store(IncidentStore, RunStore, ApprovalStore, EventStore, StateStore):
    """All reads and writes of drbot's tables, over one engine and one write transaction (`tx()`)."""
