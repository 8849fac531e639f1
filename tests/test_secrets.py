"""Secrets never printed, files private: drbot run as users run it (the CLI, the shell, `drbot serve`, exports)
with a canary secret in every variable, and every byte it writes — stdout, stderr, logs, exports — grepped.

The database is the session's PostgreSQL server (trust authentication, so a password in the URL is accepted and
ignored): the URL carries a password exactly as a production `DRBOT_DATABASE_URL` would.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.shellrun import run_shell, shell_env
from tests.slack_harness import free_port, wait_until

pytestmark = pytest.mark.slow

CANARY = "7c4n4ry"
"""In every secret; nothing drbot prints may contain it."""


def _with_password(url: str) -> str:
    return url.replace("://postgres@", f"://postgres:pw-{CANARY}-db@", 1)


def _secrets(database_url: str) -> dict[str, str]:
    return {
        "DRBOT_DATABASE_URL": database_url,
        "SLACK_BOT_TOKEN": f"xoxb-1111-{CANARY}-bot",
        "SLACK_SIGNING_SECRET": f"sign-{CANARY}-secret",
        "PAGERDUTY_WEBHOOK_SECRETS": f"whsec-{CANARY}-a,whsec-{CANARY}-b",
        "PAGERDUTY_API_TOKEN": f"u+{CANARY}-pdtoken",
        "AWS_SECRET_ACCESS_KEY": f"aws-{CANARY}-secret",
    }


def _drbot(workdir: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, cwd=workdir,
                          env=shell_env(workdir, extra=env), timeout=180)


def _clean(what: str, text: str) -> None:
    assert CANARY not in text, f"a secret reached {what}:\n{text}"
    assert "Traceback" not in text, f"a traceback reached {what}:\n{text}"


def test_no_secret_in_anything_drbot_prints(tmp_path: Path, fresh_pg_url: str) -> None:
    env = _secrets(_with_password(fresh_pg_url))
    session = run_shell(tmp_path, "/dr incident open Canary sev3 staging\n/dr restore k8s staging latest\n"
                                  ":wait 60\n/dr timeline md\n", extra_env=env)
    assert "finished successfully" in session.output, session.output + session.stderr
    _clean("the shell", session.output + session.stderr)
    for log in tmp_path.glob("*.log"):
        assert CANARY not in log.read_text(), log

    for args in (["export", "latest", "--format", "md"], ["export", "latest", "--format", "json"],
                 ["export", "latest", "--format", "csv", "-o", str(tmp_path / "out.csv")],
                 ["check"], ["audit", "verify"]):
        result = _drbot(tmp_path, *args, env=env)
        assert result.returncode in (0, 1), result.stderr
        _clean(" ".join(args), result.stdout + result.stderr)
    _clean("the export file", (tmp_path / "out.csv").read_text())

    missing = _drbot(tmp_path, "export", "INC-99", env=env)
    assert missing.returncode == 2 and "no incident 'INC-99'" in missing.stderr
    assert re.search(r"postgresql\+psycopg://postgres:\S+@127\.0\.0\.1", missing.stderr), missing.stderr
    _clean("a refusal naming the database", missing.stderr)

    unreachable = _drbot(tmp_path, "export", "latest",
                         env={**env, "DRBOT_DATABASE_URL": re.sub(r":\d+/", ":9/", env["DRBOT_DATABASE_URL"])})
    assert unreachable.returncode == 1 and unreachable.stderr.count("\n") == 1, unreachable.stderr
    assert unreachable.stderr.startswith("drbot: cannot use the database postgresql+psycopg://postgres:")
    assert "Connection refused" in unreachable.stderr
    _clean("the line about an unreachable database", unreachable.stderr)


def test_no_secret_in_what_serve_logs(tmp_path: Path, fresh_pg_url: str) -> None:
    env = shell_env(tmp_path, extra=_secrets(_with_password(fresh_pg_url)))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)

        def up() -> bool:
            try:
                return client.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=60)
        assert client.post("/slack/events", content=b"token=x&command=%2Fdr",
                           headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 401
        assert client.post("/pagerduty/webhook", content=b"{}").status_code in (400, 401)
        assert CANARY not in client.get("/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    _clean("drbot serve's output", out + err)


def test_databases_logs_and_exports_are_private(tmp_path: Path) -> None:
    session = run_shell(tmp_path, "/dr restore k8s staging latest\n:wait 60\n")
    assert "finished successfully" in session.output, session.output + session.stderr
    exported = tmp_path / "INC-1.md"
    result = subprocess.run([sys.executable, "-m", "bot.cli", "export", "INC-1", "-o", str(exported)],
                            capture_output=True, text=True, cwd=tmp_path, env=shell_env(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    made = [p for p in tmp_path.iterdir() if p.name.startswith("drbot") or p == exported]
    names = {p.name for p in made}
    assert {"drbot.db", "drbot.dbos.db", "drbot-shell.log", "INC-1.md"} <= names, names
    for path in made:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o600, f"{path.name} is {oct(mode)}, not 0600"
