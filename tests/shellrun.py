"""Drive `drbot shell` through its real REPL loop: a subprocess reading a script on stdin."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shell_env(workdir: Path, *, speed: float = 5000.0, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRBOT_", "SLACK_", "PAGERDUTY_"))}
    env.update({"DRBOT_DATABASE_URL": f"sqlite:///{workdir / 'drbot.db'}", "DRBOT_SANDBOX_SPEED": str(speed),
                "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


@dataclass
class Session:
    output: str
    stderr: str
    code: int

    def button(self, label: str, *, nth: int = -1) -> int:
        """The number printed before a button's label (the last one by default)."""
        found = re.findall(r"\[(\d+)\] " + re.escape(label), self.output)
        assert found, f"no [N] {label} button in output:\n{self.output}"
        return int(found[nth])


def run_shell(workdir: Path, script: str, *, user: str = "alice", speed: float = 5000.0, timeout: float = 180,
              args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None) -> Session:
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "shell", "--user", user, *args], input=script,
                          capture_output=True, text=True, cwd=workdir, timeout=timeout,
                          env=shell_env(workdir, speed=speed, extra=extra_env))
    return Session(output=proc.stdout, stderr=proc.stderr, code=proc.returncode)


class ShellProcess:
    """An interactive `drbot shell` session: send lines, wait for output, read button numbers."""

    def __init__(self, workdir: Path, *, user: str = "alice", speed: float = 5000.0,
                 extra_env: dict[str, str] | None = None) -> None:
        import threading

        self.proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "shell", "--user", user],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=workdir, env=shell_env(workdir, speed=speed, extra=extra_env))
        self.buffer = ""
        self.errors = ""
        self.mark = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, False), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, True), daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, stream: object, is_err: bool) -> None:
        for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
            with self._lock:
                if is_err:
                    self.errors += line
                else:
                    self.buffer += line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        with self._lock:
            self.mark = len(self.buffer)
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, pattern: str, *, timeout: float = 60.0, since_send: bool = True) -> re.Match[str]:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                text = self.buffer[self.mark:] if since_send else self.buffer
            found = re.search(pattern, text)
            if found:
                return found
            if self.proc.poll() is not None:
                time.sleep(0.2)
                with self._lock:
                    text = self.buffer[self.mark:] if since_send else self.buffer
                found = re.search(pattern, text)
                if found:
                    return found
                break
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {pattern!r}; output:\n{self.buffer}\nstderr:\n{self.errors}")

    def button(self, label: str) -> int:
        found = re.findall(r"\[(\d+)\] " + re.escape(label), self.buffer)
        assert found, f"no [N] {label} button in output:\n{self.buffer}"
        return int(found[-1])

    def close(self) -> int:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(":quit\n")
                self.proc.stdin.flush()
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill9(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
