"""The durable runtime: DBOS's lifecycle and the four things the engine asks of it — start a run's workflow, wake
one that waits for a person, say whether one is alive, and stop without losing anything.

Why apart from the engine: everything DBOS-specific (its configuration, its workflow ids, its statuses, the one
internal it has to touch at shutdown) lives here, so the engine speaks of runs, and a change in how workflows are
launched (several replicas, a queue) is a change in one module.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from runbooks.reconcile import OTHER_VERSION

if TYPE_CHECKING:
    from runbooks.workflows import Binding

__all__ = ["Runtime"]


class Runtime:
    def __init__(self, *, instance_id: str) -> None:
        self.instance_id = instance_id

    def workflow_id(self, run_id: str) -> str:
        """The DBOS workflow of a run: the run id plus the store's instance id (see Store.instance_id), so a wiped
        or replaced drbot database never meets the DBOS checkpoints of an older `R-1`."""
        return f"{run_id}.{self.instance_id}"

    def start(self, *, binding: Binding, system_database_url: str, executor_id: str) -> None:
        """Launch DBOS; runs in flight at the last stop (or crash) resume now."""
        from dbos import DBOS

        from runbooks import workflows

        workflows.bind(binding)
        config: dict[str, Any] = {
            "name": "drbot", "system_database_url": system_database_url,
            "application_version": workflows.APPLICATION_VERSION, "executor_id": executor_id,
            "run_admin_server": False, "log_level": "WARNING",
            # the minute tick is applied just after launch: picked up within 5 s, not DBOS's default 30
            "scheduler_polling_interval_sec": 5.0, **_session_name(system_database_url)}
        DBOS(config=config)  # type: ignore[arg-type]
        DBOS.launch()
        DBOS.apply_schedules([{"schedule_name": workflows.TICK, "workflow_fn": workflows.minute_tick,
                               "schedule": workflows.TICK_CRON, "context": None}])

    def launch(self, run_id: str) -> None:
        from dbos import DBOS, SetWorkflowID

        from runbooks import workflows

        with SetWorkflowID(self.workflow_id(run_id)):
            DBOS.start_workflow(workflows.run_workflow, run_id)

    def call_pagerduty(self, *, key: str, incident_id: str, action: str, params: dict[str, Any], actor: str) -> None:
        """Start the durable call to PagerDuty for `key` (once: the workflow id is the key)."""
        from dbos import DBOS, SetWorkflowID

        from runbooks import workflows

        with SetWorkflowID(f"pd.{key}.{self.instance_id}"):
            DBOS.start_workflow(workflows.pagerduty_workflow, incident_id, action, params, key, actor)

    def wake(self, run_id: str, *, key: str) -> None:
        """Make a run waiting for a person look again (a vote, a cancel); idempotent on `key`."""
        from dbos import DBOS

        DBOS.send(self.workflow_id(run_id), {"wake": key}, topic="vote", idempotency_key=key)

    def status(self, run_id: str) -> str | None:
        """The DBOS status of the run's workflow (PENDING, ERROR, …), `OTHER_VERSION` for a pending workflow this
        version will never resume, or None when there is none."""
        from dbos import DBOS

        from runbooks.workflows import APPLICATION_VERSION

        found = DBOS.get_workflow_status(self.workflow_id(run_id))
        if found is None:
            return None
        if str(found.status) == "PENDING" and found.app_version and found.app_version != APPLICATION_VERSION:
            return OTHER_VERSION
        return str(found.status)

    def stop(self, *, linger: float = 1.0) -> None:
        """Interrupt runs in flight on purpose: DBOS resumes them at the next start. `linger`: seconds to keep
        waking threads parked in a wait so that they end (0 for a process about to exit anyway)."""
        from dbos import DBOS

        from runbooks import workflows

        # Its threads complain loudly about the interruption, which would read like a failure to the person leaving.
        logging.getLogger("dbos").setLevel(logging.CRITICAL)
        waiters = _recv_waiters()
        DBOS.destroy(destroy_registry=False)
        # A run waiting for a person sits in DBOS.recv for up to a minute, in a thread the interpreter joins at
        # exit. Waking it after destroy ends that thread at once (its next read fails, nothing is written); the
        # run itself resumes from its checkpoint at the next start. A workflow that was between two steps may
        # reach recv just after destroy, so keep waking for a moment.
        for _ in range(int(linger / 0.05)):
            for signal in list(waiters.values()) if waiters is not None else []:
                signal.set()
            time.sleep(0.05)
        workflows.bind(None)


def _recv_waiters() -> dict[str, Any] | None:
    """The live map of wake-up signals of workflows blocked in DBOS.recv. This reads a DBOS internal (checked
    against dbos 3.4); if it moves, stopping still works, only slower, so every lookup is defensive."""
    try:
        from dbos import _dbos

        instance = getattr(_dbos, "_dbos_global_instance", None)
        mapping = getattr(getattr(getattr(instance, "_sys_db_field", None), "notifications_map", None), "_dict", None)
        return mapping if isinstance(mapping, dict) else None
    except Exception:  # never let a shutdown nicety break shutdown
        return None


def _session_name(database_url: str) -> dict[str, Any]:
    """DBOS names its PostgreSQL sessions `dbos_transact`, whatever the URL says. Keep the URL's
    `application_name` instead (`drbot serve`'s worker names every session `drbot-worker:<replica>`): a takeover ends
    all of a frozen leader's sessions by that name, and the database refuses DBOS writes from a session whose replica
    no longer leads (`bot.leader.fence_dbos`). Without it, a frozen leader's DBOS kept its sessions, and on waking its
    queue thread could dequeue — and take ownership of — the runs the new leader had just recovered, then exit."""
    if not database_url.startswith("postgresql"):
        return {}
    import sqlalchemy as sa

    name = sa.make_url(database_url).query.get("application_name")
    if not name:
        return {}
    return {"db_engine_kwargs": {"connect_args": {"application_name": name, "connect_timeout": 10},
                                 "pool_timeout": 30, "max_overflow": 0, "pool_size": 20, "pool_pre_ping": True}}
