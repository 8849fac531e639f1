"""A clock tests can move: `sleep` advances it (and yields the thread), `advance` jumps."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class FakeClock:
    def __init__(self, start: datetime | None = None, *, sleep_step: float = 1.0) -> None:
        self._now = start or datetime.now(UTC).replace(microsecond=0)
        self._lock = threading.Lock()
        self.sleep_step = sleep_step

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, self.sleep_step))
        time.sleep(0.002)
