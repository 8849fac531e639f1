"""Notices: what drbot says to the incident channel outside any incident — an RPO breach and its recovery, a
scheduled drill's result. Each is written once under its key (`notices` in provider state) before any surface
shows it, so a restart, a retry or a second replica never says it twice, and a surface that was down catches up
from the store (Slack's notifier posts the ones it has not posted)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from runbooks.ports import Clock, Notifier
from runbooks.store import Store
from runbooks.timeline import iso, parse_iso

__all__ = ["NOTICES", "Notice", "Notices"]

log = logging.getLogger("drbot.engine")
NOTICES = "notices"


@dataclass(frozen=True)
class Notice:
    key: str
    text: str
    at: datetime


class Notices:
    def __init__(self, *, store: Store, notifiers: Sequence[Notifier], clock: Clock) -> None:
        self.store = store
        self.notifiers = notifiers
        self.clock = clock

    def announce(self, key: str, text: str) -> bool:
        """Write the notice once under `key` and show it on every surface that shows notices (an `announce`
        method); False when it was said before."""
        now = self.clock.now()
        if not self.store.claim_once(kind=NOTICES, key=key, value={"text": text, "at": iso(now)}):
            return False
        notice = Notice(key=key, text=text, at=now)
        for notifier in list(self.notifiers):
            show = getattr(notifier, "announce", None)
            if show is None:
                continue
            try:
                show(notice)
            except Exception:  # stored already: the surface's catch-up shows it later
                log.exception("notifier %r failed on notice %s", notifier, key)
        return True

    def since(self, moment: datetime) -> list[Notice]:
        """Notices written at or after `moment`, oldest first."""
        found = [Notice(key=key, text=str(value["text"]), at=parse_iso(str(value["at"])))
                 for key, value in self.store.list_state(kind=NOTICES).items()]
        return sorted((n for n in found if n.at >= moment), key=lambda n: (n.at, n.key))

    def recent(self, window: timedelta = timedelta(days=1)) -> list[Notice]:
        return self.since(self.clock.now() - window)
