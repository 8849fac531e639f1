"""A piped `:press N` waits for button N: events print from the engine's threads, so a script that presses a
button straight after the command that makes it would otherwise race the event that numbers it."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from bot.shell.repl import Shell
from runbooks.engine import Engine
from runbooks.replies import Button, Reply
from tests.shellrun import run_shell

APPROVE = Button(label="Approve", action="approve", value="REQ-1")


class PressRecorder:
    """Stands in for the engine: the only call `:press` makes is `engine.press`."""

    def __init__(self) -> None:
        self.pressed: list[dict[str, Any]] = []

    def press(self, *, action: str, value: str, actor: str) -> Reply:
        self.pressed.append({"action": action, "value": value, "actor": actor})
        return Reply(text=f"Recorded: {actor} pressed {action} on {value}.")


def piped_shell(*, wait: float) -> tuple[Shell, PressRecorder, io.StringIO]:
    engine, out = PressRecorder(), io.StringIO()
    shell = Shell(engine=cast(Engine, engine), user="bob", out=out, interactive=False)
    shell.press_wait = wait
    return shell, engine, out


def show_later(shell: Shell, delay: float) -> threading.Thread:
    """An engine thread printing an approval request with its buttons after `delay`."""

    def post() -> None:
        time.sleep(delay)
        shell.show(Reply(text="alice asks to run database-pitr on prod (R-1).", buttons=(APPROVE,)))

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def test_piped_press_waits_for_the_button_and_stops_waiting_when_it_appears() -> None:
    shell, engine, out = piped_shell(wait=30.0)
    poster = show_later(shell, 0.3)
    began = time.monotonic()
    assert shell.line(":press 1")
    took = time.monotonic() - began
    poster.join()
    assert 0.25 <= took < 5, f"pressed after {took:.2f} s; it should wake when [1] is numbered, not at 30 s"
    assert engine.pressed == [{"action": "approve", "value": "REQ-1", "actor": "bob"}]
    text = out.getvalue()
    assert text.index("[1] Approve") < text.index("(bob pressed [1] Approve)") < text.index("Recorded: bob")
    assert "No buttons have been shown yet" not in text


def test_piped_press_refuses_a_button_that_never_appears_after_the_wait() -> None:
    shell, engine, out = piped_shell(wait=0.3)
    began = time.monotonic()
    assert shell.line(":press 1")
    assert 0.3 <= time.monotonic() - began < 5
    assert out.getvalue() == "No buttons have been shown yet (waited 0.3 s for [1]).\n"
    shell.show(Reply(text="a request", buttons=(APPROVE,)))
    assert shell.line(":press 4")
    assert out.getvalue().endswith("There is no button [4]. Buttons so far: 1–1 (waited 0.3 s for [4]).\n")
    assert engine.pressed == []


def test_interactive_press_answers_at_once() -> None:
    shell, engine, out = piped_shell(wait=30.0)
    shell.interactive = True
    began = time.monotonic()
    assert shell.line(":press 1")
    assert time.monotonic() - began < 1
    assert out.getvalue() == "No buttons have been shown yet.\n" and engine.pressed == []


@pytest.mark.slow
def test_script_presses_approve_without_a_wait(tmp_path: Path) -> None:
    session = run_shell(tmp_path, "/dr restore database prod 10:00Z\n:as bob\n:press 1\n", speed=20000, timeout=120)
    assert session.code == 0, session.stderr
    assert "No buttons have been shown yet" not in session.output
    assert "(bob pressed [1] Approve)" in session.output
    assert "R-1 (database-pitr) finished successfully" in session.output, session.output
