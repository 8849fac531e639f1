"""Where the core's events go: stored (secrets redacted), then shown by every notifier (the surfaces, the
PagerDuty mirror). A notifier's failure never undoes a stored event; it is logged once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from runbooks.models import Event
from runbooks.ports import Notifier
from runbooks.redact import redact, redact_text
from runbooks.store import Store

log = logging.getLogger("drbot.engine")

__all__ = ["EventSink"]


class EventSink:
    def __init__(self, store: Store, notifiers: Sequence[Notifier] = ()) -> None:
        self.store = store
        self.notifiers: list[Notifier] = list(notifiers)

    def emit(self, event: Event, *, dedupe_key: str | None = None) -> Event | None:
        """Store an event (secrets redacted) and show it; None when `dedupe_key` was stored before."""
        event = event.model_copy(update={"text": redact_text(event.text), "data": redact(event.data)})
        stored = self.store.append_event(event, dedupe_key=dedupe_key)
        if stored is not None:
            self.publish(stored)
        return stored

    def record(self, event: Event, *, write: Callable[[Event], Event | None]) -> Event | None:
        """Like `emit`, when the event is stored by a write that also changes something else in its transaction
        (`write(event)` stores it, redacted, and returns it as stored)."""
        stored = write(event.model_copy(update={"text": redact_text(event.text), "data": redact(event.data)}))
        self.publish(stored)
        return stored

    def publish(self, event: Event | None) -> None:
        """Show an event already stored (by a write that stored it with its change); None shows nothing."""
        if event is None:
            return
        for notifier in list(self.notifiers):
            try:
                notifier.notify(event)
            except Exception:  # a surface failure must not undo the stored event; it is logged once
                log.exception("notifier %r failed on event %s", notifier, event.seq)

    def publish_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.publish(event)
