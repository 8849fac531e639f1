"""drbot → PagerDuty: the Acknowledge button, run milestones mirrored as incident notes, and resolving upstream.

Every call is a durable DBOS workflow (`runbooks.workflows.pagerduty_workflow`) keyed by what it is for, so a
click or a milestone is sent once even if the process restarts, transient failures (429, 5xx) are retried with
backoff, and the outcome — sent or failed, with PagerDuty's reason — is written to the timeline and the thread.

Milestones are read from the event store, not from memory: the mirror keeps a cursor (the last event seq it
looked at) in drbot's database and catches up after a restart, so a note is never lost between an event being
stored and its workflow being started.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from runbooks.alerts import PD, pagerduty_id
from runbooks.errors import CommandError, NotFound, ProviderError
from runbooks.models import Event, EventKind, Incident
from runbooks.ports import Clock, Operation, OperationStatus, ProviderFactory
from runbooks.replies import Reply
from runbooks.runtime import Runtime
from runbooks.settings import EngineSettings
from runbooks.sink import EventSink
from runbooks.store import Store

__all__ = ["PagerDuty", "PagerDutyMirror", "milestone_kind"]

log = logging.getLogger("drbot.pagerduty")

CURSOR = ("pagerduty.mirror", "cursor")  # provider_state (kind, key)
RESOURCE = "pagerduty"
POLLS = 30

_VERBS = {"note": "add a note", "acknowledge": "acknowledge the incident", "resolve": "resolve the incident"}


class PagerDuty:
    """drbot's calls to PagerDuty: each a durable workflow (started through the runtime) whose steps are `call`
    and `report`."""

    def __init__(self, *, store: Store, clock: Clock, settings: EngineSettings, providers: ProviderFactory,
                 events: EventSink, runtime: Runtime) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.providers = providers
        self.events = events
        self.runtime = runtime

    def milestone(self, event: Event) -> str | None:
        """The note PagerDuty should get for `event`, or None: PITR started/finished, DNS switched, replica promoted,
        service restored (with the RTO), the RTO target reached without a restore, a run that failed."""
        where = f"[drbot {event.incident_id}{' ' + event.run_id if event.run_id else ''}] "
        if event.kind == EventKind.INCIDENT_RESTORED:
            return where + event.text
        if event.kind == EventKind.RTO_WARNING and event.data.get("percent") == 100:
            return where + "RTO target reached and the service is not restored yet. " + event.text
        if event.kind == EventKind.RUN_FAILED:
            return where + event.text
        if event.kind not in (EventKind.STEP_OPERATION, EventKind.STEP_COMPLETED) or event.run_id is None:
            return None
        run = self.store.get_run(event.run_id)
        step_id = event.data.get("step_id")
        planned = next((s for s in run.plan.steps if s.id == step_id), None) if run and run.plan else None
        if planned is None:
            return None
        started = event.kind == EventKind.STEP_OPERATION
        if planned.action in ("database.restore_pitr", "database.restore_latest_backup"):
            return where + ("Restore started: " if started else "Restore finished: ") + event.text
        if planned.action == "dns.switch" and not started:
            return where + "DNS switched: " + event.text
        if planned.action == "database.promote_replica" and not started:
            return where + "Replica promoted: " + event.text
        return None

    def writes_back(self, incident: Incident) -> bool:
        """Whether the incident's environment has a `pagerduty` resource to call."""
        env = self.settings.environments.get(incident.environment)
        return env is not None and RESOURCE in env.resources

    def send(self, *, incident: Incident, action: str, params: dict[str, Any], key: str,
             actor: str = "drbot") -> None:
        """Start the durable call (once per `key`), or say in the thread why it cannot be made."""
        if not self.writes_back(incident):
            self.events.emit(Event(
                incident_id=incident.id, at=self.clock.now(), actor="drbot", kind=EventKind.PAGERDUTY_FAILED,
                text=f"Could not {_VERBS.get(action, action)} in PagerDuty: environments.{incident.environment}"
                     f".pagerduty is not configured in drbot.yml (add `pagerduty: {{provider: pagerduty}}` and set "
                     f"PAGERDUTY_API_TOKEN and PAGERDUTY_FROM_EMAIL).", data={"action": action}),
                dedupe_key=f"{key}:unconfigured")
            return
        self.runtime.call_pagerduty(key=key, incident_id=incident.id, action=action, params=params, actor=actor)

    def call(self, *, incident_id: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """The step body: pre-flight, start, follow to the end. Errors come back as a result to report, not raised:
        DBOS would otherwise retry the step on its own schedule and the thread would hear nothing."""
        incident = self.store.get_incident(incident_id)
        if incident is None:
            return {"ok": False, "error": f"there is no incident {incident_id}"}
        env = self.settings.environment(incident.environment)
        try:
            provider = self.providers(environment=env.name, resource=RESOURCE,
                                        config=env.resources[RESOURCE].model_dump())
            problems = provider.preflight(action=action, params=params)
            if problems:
                return {"ok": False, "error": "; ".join(problems)}
            # The provider owns the retry policy for 429/5xx (bounded, with backoff and Retry-After); retrying again
            # here would multiply the attempts and the wait.
            op: Operation = provider.start(action=action, params=params, run_id=incident_id)
            delay = self.settings.poll.initial
            for _ in range(POLLS):
                status: OperationStatus = provider.poll(operation=op)
                if status.done:
                    return {"ok": not status.failed, "error": status.message, "outputs": status.outputs}
                self.clock.sleep(delay)
                delay = self.settings.poll.backoff(delay)
            return {"ok": False, "error": f"PagerDuty did not confirm the {action} in time"}
        except ProviderError as exc:
            return {"ok": False, "error": exc.message}

    def report(self, *, incident_id: str, action: str, params: dict[str, Any], key: str, actor: str,
               result: dict[str, Any]) -> None:
        pd_incident = params.get("incident", "")
        if result.get("ok"):
            texts = {"note": f"Noted in PagerDuty ({pd_incident}): {params.get('text', '')}",
                     "acknowledge": f"{actor} acknowledged PagerDuty incident {pd_incident} from drbot.",
                     "resolve": f"Resolved PagerDuty incident {pd_incident}"
                                + (f" with the note: {params['note']}" if params.get("note") else ".")}
            kind, text = EventKind.PAGERDUTY_SENT, texts.get(action, f"PagerDuty {action} done.")
        else:
            kind = EventKind.PAGERDUTY_FAILED
            text = (f"Could not {_VERBS.get(action, action)} in PagerDuty ({pd_incident}) after retrying: "
                    f"{result.get('error') or 'no reason given'}. Nothing was changed there; do it in PagerDuty.")
        self.events.emit(Event(incident_id=incident_id, at=self.clock.now(), actor="drbot", kind=kind, text=text,
                               data={"action": action, "key": key}), dedupe_key=f"{key}:reported")

    def acknowledge(self, *, incident_id: str, actor: str) -> Reply:
        """The Acknowledge button (and the shell's `:press`)."""
        incident = self.store.get_incident(incident_id)
        if incident is None:
            raise NotFound(f"There is no incident {incident_id}.")
        pd = pagerduty_id(incident)
        if pd is None:
            raise CommandError(f"{incident.id} was not opened from PagerDuty, so there is nothing to acknowledge "
                               f"there.")
        snap = incident.external.get(PD) or {}
        if snap.get("status") in ("acknowledged", "resolved"):
            return Reply(text=f"PagerDuty incident {pd} is already {snap['status']}.", incident_id=incident.id)
        self.send(incident=incident, action="acknowledge", params={"incident": pd},
             key=f"{incident.id}.ack.{snap.get('as_of', '')}", actor=actor)
        return Reply(text=f"Acknowledging PagerDuty incident {pd} for {actor}…", incident_id=incident.id)

    def resolve_upstream(self, incident: Incident, note: str, actor: str) -> None:
        """`/dr incident resolve` resolves the PagerDuty incident too (unless PagerDuty already says resolved)."""
        pd = pagerduty_id(incident)
        snap = incident.external.get(PD) or {}
        if pd is None or snap.get("status") == "resolved":
            return
        self.send(incident=incident, action="resolve", actor=actor, key=f"{incident.id}.resolve",
             params={"incident": pd, "note": note or f"Resolved in drbot ({incident.id}) by {actor}."})


class PagerDutyMirror:
    """A notifier that wakes a thread; the thread reads new events from the store and sends milestone notes."""

    def __init__(self, pagerduty: PagerDuty, *, interval: float = 5.0) -> None:
        self.pagerduty = pagerduty
        self.store = pagerduty.store
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def notify(self, event: Event) -> None:
        if milestone_kind(event.kind):
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="drbot-pagerduty-mirror", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.catch_up()
            except Exception:  # the cursor has not moved: the next pass sends what this one could not
                log.exception("pagerduty mirror pass failed")
            self._wake.wait(self.interval)
            self._wake.clear()

    def catch_up(self) -> int:
        """Send notes for milestone events after the cursor; returns how many were started."""
        kind, key = CURSOR
        saved = self.store.load_state(kind=kind, key=key)
        if saved is None:  # first start: mirror what happens from now on, not the history
            self.store.save_state(kind=kind, key=key, value={"seq": self.store.last_seq()})
            return 0
        cursor, started = int(saved["seq"]), 0
        while not self._stop.is_set():
            batch = self.store.events_after(after_seq=cursor)
            if not batch:
                return started
            for event in batch:
                if milestone_kind(event.kind):
                    started += self._mirror(event)
                cursor = event.seq or cursor
            self.store.save_state(kind=kind, key=key, value={"seq": cursor})
        return started

    def _mirror(self, event: Event) -> int:
        incident = self.store.get_incident(event.incident_id)
        pd = pagerduty_id(incident) if incident else None
        if incident is None or pd is None or not self.pagerduty.writes_back(incident):
            return 0  # without a `pagerduty` resource, mirroring is off (the button and resolve still say so)
        text = self.pagerduty.milestone(event)
        if text is None:
            return 0
        self.pagerduty.send(incident=incident, action="note", params={"incident": pd, "text": text},
             key=f"{incident.id}.note.{event.seq}")
        return 1


def milestone_kind(kind: str) -> bool:
    return kind in MILESTONES


MILESTONES = frozenset({EventKind.INCIDENT_RESTORED, EventKind.RTO_WARNING, EventKind.RUN_FAILED,
                        EventKind.STEP_OPERATION, EventKind.STEP_COMPLETED})
