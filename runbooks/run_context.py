"""What the step bodies of a run share: the collaborators, and the few things every body does — read the run,
write a timeline line, build a step's provider, retry a transient provider error, turn an exception into a fault."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from runbooks import planning
from runbooks.catalog import Catalog
from runbooks.errors import DrbotError, PermanentError, TransientError
from runbooks.faults import Fault
from runbooks.models import Event, Run, StepSpec
from runbooks.ports import Clock, Provider, ProviderFactory
from runbooks.settings import EngineSettings
from runbooks.settling import Settler
from runbooks.sink import EventSink
from runbooks.store import Store

log = logging.getLogger("drbot.engine")

__all__ = ["TRANSIENT_ATTEMPTS", "RunContext"]

TRANSIENT_ATTEMPTS = 5

T = TypeVar("T")


class RunContext:
    def __init__(self, *, store: Store, catalog: Catalog, clock: Clock, settings: EngineSettings,
                 providers: ProviderFactory, events: EventSink, settler: Settler) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.settings = settings
        self.providers = providers
        self.events = events
        self.settler = settler

    def run(self, run_id: str) -> Run:
        run = self.store.get_run(run_id)
        if run is None:
            raise DrbotError(f"run {run_id} vanished from the store")
        return run

    def spec(self, run: Run, step_id: str) -> StepSpec:
        runbook = self.catalog.for_run(run)
        return next(s for s in (*runbook.steps, *runbook.cleanup) if s.id == step_id)

    def emit(self, run: Run, kind: str, text: str, *, key: str | None, actor: str = "drbot",
             data: Mapping[str, Any] | None = None) -> None:
        self.events.emit(Event(incident_id=run.incident_id, run_id=run.id, at=self.clock.now(), actor=actor,
                               kind=kind, text=text, data=dict(data or {})), dedupe_key=key)

    def provider_for(self, run: Run, step: StepSpec) -> Provider:
        resource = planning.resource_of(step)
        env = self.settings.environment(run.environment)
        return self.providers(environment=env.name, resource=resource, config=env.resources[resource].model_dump())

    def fault(self, exc: Exception, *, where: str, run_id: str) -> Fault:
        return self.settler.fault(exc, where=where, run_id=run_id)

    def settle(self, run_id: str, *, cause: str, error_id: str = "") -> str:
        return self.settler.settle(run_id, cause=cause, error_id=error_id)

    def with_retries(self, what: str, call: Callable[[], T]) -> T:
        """Retry transient provider errors with capped exponential backoff; let the rest through."""
        delay = self.settings.poll.initial
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                return call()
            except TransientError as exc:
                if attempt == TRANSIENT_ATTEMPTS:
                    raise PermanentError(f"{exc.message} (still failing after {attempt} attempts)",
                                         provider=exc.provider, code=exc.code) from exc
                log.warning("%s: transient error, retrying in %.2fs: %s", what, delay, exc.message)
                self.clock.sleep(delay)
                delay = self.settings.poll.backoff(delay)
        raise AssertionError("unreachable")
