"""Operations that a double finishes at a known moment, for measuring how long drbot takes to notice.

The doubles normally advance an operation per poll (each GET moves it one state), which keeps unit tests fast and
deterministic but cannot say *when* the operation finished. Given an `OperationTimer`, a double instead reports
its operation in progress until `T = created + duration` on the timer's clock and done from then on, and leaves T
in `finished_at[name]`, so a benchmark can subtract T from the time of drbot's completion event. It also keeps
the last check that found the operation pending and the first that found it done (`last_pending`, `first_done`):
their gap is how finely the client was polling around T, which bounds the overhead for any phase of T.

The clock is any `Callable[[], float]` in seconds: `time.monotonic` (the default) for real waiting, or a
benchmark's warped clock shared with the engine so that a 2-minute operation is waited for in a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class OperationTimer:
    """Shared by a double and its test or benchmark; `duration` may be changed between operations."""

    def __init__(self, *, duration: float, clock: Callable[[], float] = time.monotonic) -> None:
        if duration < 0:
            raise ValueError(f"duration must be >= 0 seconds, got {duration}")
        self.duration = duration
        self.clock = clock
        self.created_at: dict[str, float] = {}
        self.finished_at: dict[str, float] = {}
        self.last_pending: dict[str, float] = {}
        self.first_done: dict[str, float] = {}
        self._lock = threading.Lock()

    def begin(self, name: str) -> float:
        """Start (or restart: a new rollout of the same Deployment) the operation `name`; returns its T."""
        with self._lock:
            created = self.clock()
            self.created_at[name] = created
            self.finished_at[name] = created + self.duration
            self.last_pending.pop(name, None)
            self.first_done.pop(name, None)
            return self.finished_at[name]

    def tracks(self, name: str) -> bool:
        with self._lock:
            return name in self.finished_at

    def done(self, name: str) -> bool:
        """Whether T has passed; an operation this timer never began counts as done (it is not timed)."""
        now = self.clock()
        with self._lock:
            finish = self.finished_at.get(name)
            if finish is None:
                return True
            if now < finish:
                self.last_pending[name] = now
                return False
            self.first_done.setdefault(name, now)
            return True

    def fraction(self, name: str) -> float:
        """How far along the operation is, 0.0–1.0, for doubles that report progress."""
        with self._lock:
            created, finish = self.created_at.get(name), self.finished_at.get(name)
        if created is None or finish is None or finish <= created:
            return 1.0
        return min(1.0, max(0.0, (self.clock() - created) / (finish - created)))
