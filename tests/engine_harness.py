"""An engine in this process, on a SQLite file, with the sandbox and a recording notifier."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bot.config import SANDBOX_CONFIG, Settings, build_config
from bot.wiring import build_engine, start_engine
from runbooks.catalog import Catalog
from runbooks.engine import Engine, PollPolicy, Reply, describe_buttons
from runbooks.models import Event
from runbooks.ports import Clock


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def notify(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def last(self, kind: str) -> Event:
        found = [e for e in self.events if e.kind == kind]
        assert found, f"no {kind} event; got {self.kinds()}"
        return found[-1]

    def wait_for(self, kind: str, *, timeout: float = 30.0, count: int = 1) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events if e.kind == kind]
            if len(found) >= count:
                return found[count - 1]
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {kind}; got {self.kinds()}")


def sandbox_config(**changes: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(SANDBOX_CONFIG)
    for change in changes.values():
        change(data)
    return data


class Harness:
    def __init__(self, tmp: Path, *, config: dict[str, Any] | None = None, clock: Clock | None = None,
                 speed: float = 1e5, catalog: Catalog | None = None) -> None:
        self.settings = Settings(drbot_database_url=f"sqlite:///{tmp / 'drbot.db'}", drbot_sandbox_speed=speed)
        self.recorder = Recorder()
        self.engine: Engine = build_engine(
            settings=self.settings, config=build_config(config or copy.deepcopy(SANDBOX_CONFIG), source="test"),
            notifiers=[self.recorder], clock=clock, catalog=catalog,
            poll=PollPolicy(initial=0.005, factor=1.5, maximum=0.02))
        start_engine(self.engine, settings=self.settings, budget_ticker=False)

    def say(self, text: str, *, actor: str = "alice", incident_id: str | None = None) -> Reply:
        return self.engine.handle(command=self.engine.parse(text), actor=actor, incident_id=incident_id, text=text)

    def press(self, event_kind: str, label: str, *, actor: str, **kwargs: Any) -> Reply:
        event = self.recorder.last(event_kind)
        button = next(b for b in describe_buttons(event) if b.label == label)
        return self.engine.press(action=button.action, value=button.value, actor=actor, **kwargs)

    def settle(self, timeout: float = 60.0) -> None:
        assert self.engine.wait_settled(timeout=timeout), "runs did not settle"

    def close(self) -> None:
        self.engine.stop()


def harness_fixture(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**kwargs: Any) -> Harness:
        h = Harness(tmp_path, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
