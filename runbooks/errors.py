"""The one exception tree of drbot.

    DrbotError
    ├── CommandError          a known business reason: shown to the user, changes nothing
    │   ├── GrammarError      a `/dr …` line that does not parse (names the bad token and the right form)
    │   ├── ApprovalRefused   the two-person rule said no (self-approval, non-approver, expired, …)
    │   └── NotFound          an incident, run or request that does not exist
    ├── ConfigError           drbot.yml or a runbook file is wrong (names the file and the key path)
    └── ProviderError         a cloud or sandbox call failed; `message` is safe to show (secrets redacted)
        ├── TransientError    throttling, 5xx, timeouts: retried with backoff
        ├── PermanentError    the provider refused: the step fails and the run pauses for a decision
        └── PreflightFailed   a read-only check found the operation impossible

Surfaces catch `CommandError` and reply with its message; anything else is a bug, logged once with an error id.
"""

from __future__ import annotations


class DrbotError(Exception):
    """Base of every error drbot raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CommandError(DrbotError):
    """A refusal with a reason the user can act on."""


class GrammarError(CommandError):
    """A command line that does not parse.

    `token` is the offending token (or "" when something is missing); `usage` is the right form.
    """

    def __init__(self, message: str, *, token: str = "", usage: str = "") -> None:
        text = message if not usage else f"{message}\nUsage: {usage}"
        super().__init__(text)
        self.token = token
        self.usage = usage


class ApprovalRefused(CommandError):
    """The two-person rule refused an approval, rejection or decision."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotFound(CommandError):
    """Something named by the user does not exist."""


class ConfigError(DrbotError):
    """Configuration or runbook file problem; the message names the file and the key path."""


class ProviderError(DrbotError):
    """A provider call failed. The message is safe to show to people."""

    def __init__(self, message: str, *, provider: str = "", code: str = "") -> None:
        super().__init__(message)
        self.provider = provider
        self.code = code


class TransientError(ProviderError):
    """Worth retrying: throttling, 5xx, connection reset, timeout."""


class PermanentError(ProviderError):
    """Not worth retrying without a human decision."""


class PreflightFailed(ProviderError):
    """A read-only check shows the operation cannot succeed."""
