"""Where drbot's log goes. One format for every process; in `drbot shell` the terminal is the chat, so tracebacks
go to a log file and the terminal gets one line per problem.

A person reading the shell should see what drbot says (the run failed, with an error id) and never a Python
traceback in the middle of the conversation; whoever debugs needs the whole traceback. The error id joins them:
it is in the chat line and in the log record.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from runbooks.redact import redact_text

__all__ = ["FORMAT", "OneLine", "Redacting", "configure", "mask_library_handlers", "name_replica",
           "send_tracebacks_to"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_format = FORMAT
"""The format in use: `name_replica` adds the replica id (`drbot serve`)."""


class Redacting(logging.Formatter):
    """The whole record, traceback included, with secrets masked (a database URL's password, tokens, keys):
    a library's message may carry them, and logs are read by more people than secrets should be."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class OneLine(Redacting):
    """A record's message without its traceback (that goes to the log file)."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return " ".join(super().format(record).split("\n")[:1])
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def configure() -> None:
    """One format for every drbot process (the serve worker calls this too), secrets masked."""
    logging.basicConfig(level=logging.WARNING, format=_format, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(Redacting(_format))


def name_replica(replica: str) -> None:
    """Every line from here on names this `drbot serve` replica (its front and its worker), so the log of several
    replicas, gathered in one place, says which one spoke."""
    global _format
    _format = f"%(asctime)s %(levelname)s [{replica.replace('%', '%%')}] %(name)s: %(message)s"
    for name in ("", "dbos"):
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(Redacting(_format))


def send_tracebacks_to(path: Path) -> Path:
    """Full records (tracebacks included) to `path`; every handler already writing to the terminal keeps one line
    per record. Covers the root logger and DBOS's own (it has handlers of its own and does not propagate)."""
    target = logging.FileHandler(path, encoding="utf-8")
    target.setFormatter(Redacting(FORMAT))
    target.setLevel(logging.WARNING)
    for name in ("", "dbos"):
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setFormatter(OneLine(FORMAT + " (details in " + path.name + ")"))
        if name == "" or not logger.propagate:
            logger.addHandler(target)
    return path


def mask_library_handlers() -> None:
    """Libraries that log through handlers of their own (DBOS) get the same masking; call it once they exist."""
    for handler in logging.getLogger("dbos").handlers:
        if not isinstance(handler.formatter, Redacting):
            handler.setFormatter(Redacting(_format))
