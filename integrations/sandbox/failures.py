"""Injected failures: drbot.yml can make a sandbox action fail at one point of a run, so rehearsals and tests walk
the failure paths on purpose. Counts live in the `StateStore` (`sandbox.failures`), so a failure that should
happen once happens once, across restarts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runbooks.errors import ConfigError

INJECTION_POINTS = ("plan", "preflight", "start", "poll", "verify")
"""Where a failure can be injected: each is one `Provider` call, in the order a run makes them."""


class SandboxCrash(RuntimeError):
    """An injected bug: deliberately *not* a `ProviderError`, so it takes the path an untranslated SDK exception
    or a plain programming error would, and a test can prove that such a surprise never strands a run (no
    half-started step left without a message, a decision or a way to resume)."""


@dataclass(frozen=True)
class Failure:
    """An injected failure from drbot.yml: fail `times` times at one of `INJECTION_POINTS`, then succeed.

    A failure raises a `PermanentError` (or `TransientError` when `transient`); with `crash` it raises a
    `SandboxCrash` instead.
    """

    message: str
    times: int = 1
    at: str = "start"
    transient: bool = False
    crash: bool = False


FAILURE_KEYS = ("at", "message", "times", "transient", "crash")


def parse_failures(raw: Any, *, where: str, actions: frozenset[str]) -> dict[str, Failure]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}.failures must be a mapping of action → {{at, message, times, transient, crash}}; "
                          f"got {type(raw).__name__}.")
    failures: dict[str, Failure] = {}
    for name, spec in raw.items():
        action = str(name).split(".")[-1]
        path = f"{where}.failures.{name}"
        if action not in actions:
            raise ConfigError(f"{path}: unknown action `{name}`; use one of {', '.join(sorted(actions))}.")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{path} must be a mapping such as {{message: 'throttled', times: 1, at: start}} "
                              f"or {{at: poll, crash: true}}.")
        unknown = sorted(str(k) for k in spec if k not in FAILURE_KEYS)
        if unknown:  # a typo such as `crsh: true` would otherwise inject an ordinary failure, silently
            raise ConfigError(f"{path}.{unknown[0]}: unknown key; a failure takes {', '.join(FAILURE_KEYS)}.")
        at = str(spec.get("at", "start"))
        if at not in INJECTION_POINTS:
            raise ConfigError(f"{path}.at must be one of {', '.join(INJECTION_POINTS)}; got {at!r}.")
        times = spec.get("times", 1)
        if not isinstance(times, int) or isinstance(times, bool) or times < 0:
            raise ConfigError(f"{path}.times must be a whole number ≥ 0; got {times!r}.")
        crash = spec.get("crash", False)
        if not isinstance(crash, bool):
            raise ConfigError(f"{path}.crash must be true or false; got {crash!r}.")
        transient = spec.get("transient", False)
        if not isinstance(transient, bool):
            raise ConfigError(f"{path}.transient must be true or false; got {transient!r}.")
        if crash and transient:
            raise ConfigError(f"{path}: `crash` and `transient` cannot be combined — a crash is an unexpected "
                              f"exception, never a provider error; drop one of them.")
        default = (f"Injected sandbox crash in {action} at {at}." if crash
                   else f"Injected sandbox failure for {action}.")
        failures[action] = Failure(message=str(spec.get("message") or default), times=times, at=at,
                                   transient=transient, crash=crash)
    return failures

