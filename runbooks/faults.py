"""What drbot says when something unexpected is raised inside a run: a sentence a person can act on, a short error
id, and the traceback in the log under that id only (errbot's pattern; STYLE.md rule 5).

A run must never be left half-way because of an exception nobody planned for (a template naming a setting the
environment lacks, an SDK exception that escaped translation, a bug, a database hiccup). The engine catches it
where it happens and calls `contain`, which logs it once and returns a `Fault`: the error id and the words that go
to the thread, the requester and the timeline. No traceback ever leaves the log.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from runbooks.errors import DrbotError
from runbooks.redact import redact_text
from runbooks.templating import TemplateError

log = logging.getLogger("drbot.engine")

__all__ = ["Fault", "contain", "describe", "drbot_yml_path", "new_error_id"]

MAX_DETAIL = 300
"""Characters of a foreign exception's message shown to people; the rest is in the log."""


@dataclass(frozen=True)
class Fault:
    error_id: str
    message: str
    """What went wrong, in words a person can act on; never a traceback, secrets redacted."""

    @property
    def text(self) -> str:
        return f"{self.message} (error {self.error_id})"


def new_error_id() -> str:
    return uuid.uuid4().hex[:8]


def drbot_yml_path(template_path: str, *, environment: str) -> str:
    """`env.settings.integrity_query` → `environments.prod.settings.integrity_query` (where to add it)."""
    root, _, rest = template_path.partition(".")
    if root == "env" and rest:
        return f"environments.{environment}.{rest}"
    return template_path


def describe(exc: BaseException, *, environment: str = "") -> str:
    """One sentence about `exc`. drbot's own errors carry a message written for people; a template error names
    the missing drbot.yml key; anything else is named by its type with the first line of its message."""
    if isinstance(exc, TemplateError) and exc.path.startswith("env.") and environment:
        where = drbot_yml_path(exc.path, environment=environment)
        return f"{where} is not set in drbot.yml, and this step needs it ({exc.message})"
    if isinstance(exc, DrbotError):
        return redact_text(exc.message)
    first = (str(exc).strip().splitlines() or [""])[0]
    if len(first) > MAX_DETAIL:
        first = first[:MAX_DETAIL - 1] + "…"
    detail = f": {redact_text(first)}" if first else ""
    return f"unexpected {type(exc).__name__} inside drbot{detail}"


def contain(exc: BaseException, *, where: str, environment: str = "") -> Fault:
    """Log `exc` once with a fresh error id (the full traceback, for whoever reads the log) and say it in words."""
    fault = Fault(error_id=new_error_id(), message=describe(exc, environment=environment))
    log.error("error %s in %s: %s", fault.error_id, where, fault.message, exc_info=exc)
    return fault
