"""`drbot shell`: chat with drbot offline. Type `/dr …` lines as in Slack; events print as they happen.

Meta commands (DESIGN §5): `:as NAME` switches the acting user, `:press N` presses button N. Extras for people
and scripts: `:wait [SECONDS]` waits until every run is finished or waiting for a person, `:incident INC-n`
picks the incident later commands belong to (like typing in its Slack thread), `:help`, `:quit`.
Buttons are numbered once for the whole session, so `:press 3` always means the button printed as `[3]`, even
if other messages arrived in between. Events (and their buttons) arrive from the engine's background threads, so
with piped input a script cannot know when `[3]` will have printed: there `:press 3` waits up to `press_wait`
(30 s) for it instead of refusing, and `printf '/dr restore …\n:as bob\n:press 1\n' | drbot shell` works without
a `:wait`. Typed at a prompt, the answer is immediate: a person can see which buttons exist. At the end of piped
input the shell waits for runs to settle, so a scripted session shows how it ended.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable
from typing import TextIO

from bot.shell import render
from runbooks.engine import Engine
from runbooks.errors import CommandError
from runbooks.models import Event
from runbooks.notices import Notice
from runbooks.replies import Button, Reply, describe_buttons

META_HELP = """Shell commands:
  /dr …            a drbot command, exactly as in Slack (/dr help lists them)
  :as NAME         act as another person (approvers in the sandbox: alice, bob, carol)
  :press N         press the button printed as [N] (piped input waits up to 30 s for it to print)
  :wait [SECONDS]  wait until every run is finished or waiting for a person (default 120 s)
  :incident INC-n  send later commands to that incident (like its Slack thread)
  :page "TITLE" [SERVICE]  simulate a PagerDuty alert (incident.triggered) for a service in drbot.yml
  :help            this text
  :quit            leave (runs in flight continue next time you start drbot)"""


class Shell:
    """The REPL adapter: translate lines into engine calls and print what comes back."""

    press_wait: float = 30.0
    """Seconds a piped `:press N` waits for button N to be printed before refusing."""

    def __init__(self, *, engine: Engine, user: str, out: TextIO, interactive: bool) -> None:
        self.engine = engine
        self.user = user
        self.out = out
        self.interactive = interactive
        self.incident: str | None = None
        self.buttons: dict[int, Button] = {}
        self._next = 1
        self._lock = threading.RLock()
        self._numbered = threading.Condition(self._lock)
        """Notified whenever buttons get numbers, so a piped `:press N` wakes as soon as [N] exists."""

    # --------------------------------------------------------------------------------------- output

    def write(self, lines: list[str]) -> None:
        with self._lock:
            for line in lines:
                self.out.write(line + "\n")
            self.out.flush()

    def _number(self, buttons: tuple[Button, ...]) -> list[tuple[int, Button]]:
        with self._lock:
            numbered = []
            for button in buttons:
                self.buttons[self._next] = button
                numbered.append((self._next, button))
                self._next += 1
            if numbered:
                self._numbered.notify_all()
            return numbered

    def notify(self, event: Event) -> None:
        """The shell's Notifier: print each event as it is stored, with its buttons."""
        with self._lock:
            lines = render.event_lines(event)
            buttons = describe_buttons(event)
            self.write(lines + render.button_line(self._number(buttons)))

    def announce(self, notice: Notice) -> None:
        """A notice to the incident channel (an RPO breach, a scheduled drill's result)."""
        self.write([f"{notice.at:%H:%M:%SZ} drbot    📣 {notice.text}"])

    def show(self, reply: Reply) -> None:
        with self._lock:
            if reply.incident_id is not None:
                self.incident = reply.incident_id
            self.write(render.reply_lines(reply) + render.button_line(self._number(reply.buttons)))

    # --------------------------------------------------------------------------------------- input

    def run(self, stdin: TextIO) -> int:
        if self.interactive:
            self.write([f"drbot shell — you are {self.user}. Type /dr help, or :help for shell commands."])
        while True:
            if self.interactive:
                with self._lock:
                    self.out.write(f"{self.user}> ")
                    self.out.flush()
            line = stdin.readline()
            if not line:
                break
            if not self.line(line.strip()):
                return 0
        if not self.interactive:
            self.engine.wait_settled(timeout=600)
        return 0

    def line(self, text: str) -> bool:
        """Handle one input line; False means quit."""
        if not text or text.startswith("#"):
            return True
        try:
            if text.startswith(":"):
                return self.meta(text)
            if text.startswith("/"):
                if not text.startswith("/dr"):
                    self.write([f"Unknown slash command {text.split()[0]!r}; drbot answers to /dr (try /dr help)."])
                    return True
                self.command(text)
                return True
            self.write(["Type a /dr command (/dr help), or :help for shell commands."])
        except CommandError as exc:
            self.write([exc.message])
        except Exception as exc:  # a bug: say so once, with an id to find it in the log
            error_id = uuid.uuid4().hex[:8]
            import logging

            logging.getLogger("drbot.shell").exception("error %s on %r", error_id, text)
            self.write([f"Something went wrong inside drbot (error {error_id}: {type(exc).__name__}). "
                        f"Nothing else was changed by this line."])
        return True

    def command(self, text: str) -> None:
        command = self.engine.parse(text)
        reply = self.engine.handle(command=command, actor=self.user, incident_id=self.incident, text=text)
        self.show(reply)

    def meta(self, text: str) -> bool:
        word, _, rest = text.partition(" ")
        rest = rest.strip()
        if word == ":as":
            if not rest or " " in rest:
                raise CommandError("Usage: :as NAME (one word, e.g. :as bob)")
            self.user = rest
            self.write([f"You are now {self.user}."])
        elif word == ":press":
            self.press(rest)
        elif word == ":wait":
            try:
                timeout = float(rest) if rest else 120.0
            except ValueError:
                raise CommandError(f"Usage: :wait [SECONDS] — {rest!r} is not a number of seconds") from None
            if not self.engine.wait_settled(timeout=timeout):
                self.write([f"Still running after {timeout:g} s (:wait again, or /dr status)."])
        elif word == ":incident":
            found = self.engine.queries.get_incident(rest) if rest else None
            if found is None:
                known = ", ".join(i.id for i in self.engine.queries.list_incidents()) or "none yet"
                raise CommandError(f"Usage: :incident INC-n (known: {known})")
            self.incident = found.id
            self.write([f"Commands now go to {found.id}: {found.title}."])
        elif word == ":page":
            self.page(rest)
        elif word == ":help":
            self.write(META_HELP.splitlines())
        elif word in (":quit", ":q", ":exit"):
            return False
        else:
            raise CommandError(f"Unknown shell command {word!r}.\n{META_HELP}")
        return True

    def page(self, rest: str) -> None:
        """An offline alert through the webhook's own parse-and-apply path (only the signature check is skipped:
        nothing crossed a network)."""
        import shlex

        from bot.pagerduty import PagerDutyWebhook, simulated_page

        usage = 'Usage: :page "TITLE" [SERVICE] — e.g. :page "Database CPU at 100%" PSANDBOX'
        try:
            words = shlex.split(rest)
        except ValueError as exc:
            raise CommandError(f"{usage} ({exc})") from None
        routes = self.engine.settings.alert_routes
        if not words or len(words) > 2:
            raise CommandError(usage)
        if not routes:
            raise CommandError("No PagerDuty services are routed: add `pagerduty.services` to drbot.yml, e.g. "
                               "`PSVC1: {channel: C0INCIDENT, environment: prod}`.")
        service = words[1] if len(words) == 2 else next(iter(routes))
        if service not in routes:
            raise CommandError(f"PagerDuty service {service!r} is not in drbot.yml (routed: {', '.join(routes)}). "
                               + usage)
        body = simulated_page(title=words[0], service=service, now=self.engine.clock.now())
        result = PagerDutyWebhook(engine=self.engine, secrets=()).deliver(body)
        incident = result.body.get("incident")
        if incident:
            self.incident = str(incident)
        self.write([f"PagerDuty alert simulated for {service}: {result.body.get('status')}"
                    + (f" → {incident}" if incident else f" ({result.body.get('message') or result.body})")])

    def press(self, rest: str) -> None:
        try:
            number = int(rest)
        except ValueError:
            raise CommandError(f"Usage: :press N — N is the number in brackets, e.g. :press 1 (got {rest!r})") from None
        waited = ""
        with self._lock:
            if number >= self._next and not self.interactive:  # not printed yet: its event may still be on its way
                self._numbered.wait_for(lambda: number in self.buttons, timeout=self.press_wait)
                waited = f" (waited {self.press_wait:g} s for [{number}])"
            button = self.buttons.get(number)
            shown = self._next - 1
        if button is None:
            raise CommandError(f"There is no button [{number}]. Buttons so far: 1–{shown}{waited}."
                               if shown else f"No buttons have been shown yet{waited}.")
        self.write([f"({self.user} pressed [{number}] {button.label})"])
        self.show(self.engine.press(action=button.action, value=button.value, actor=self.user))


def main(engine: Engine, *, user: str, start: Callable[[], None], stdin: TextIO | None = None,
         out: TextIO | None = None) -> int:
    """Attach the shell to the engine, then start it, so that runs resumed after a crash print too."""
    stdin = stdin or sys.stdin
    shell = Shell(engine=engine, user=user, out=out or sys.stdout, interactive=stdin.isatty())
    engine.notifiers.append(shell)
    resumed = engine.queries.active_runs()
    if resumed:
        shell.write([f"Resuming {r.id} ({r.runbook} on {r.environment}, {r.status.value}) from where it stopped."
                     for r in resumed])
    start()
    return shell.run(stdin)
