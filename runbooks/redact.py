"""Keep secrets out of everything people read: thread messages, logs, exports.

Providers already avoid putting secrets in their messages, but a cloud error can quote a connection string, and
a runbook can pass a Secret's data. This is the last line: every event is redacted before it is stored, so nothing
downstream (surfaces, exports, the audit chain) ever holds the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "«redacted»"

_SECRET_KEY = re.compile(r"(pass(word|wd)?|secret|token|api[_-]?key|credential|private[_-]?key|authorization)",
                         re.IGNORECASE)
_PATTERNS = [
    re.compile(r"\b(xox[abposr]-[A-Za-z0-9-]{6,})"),                      # Slack tokens
    re.compile(r"\b(xapp-[A-Za-z0-9-]{6,})"),                             # Slack app tokens
    re.compile(r"\b((?:AKIA|ASIA)[A-Z0-9]{16})\b"),                        # AWS access key ids
    re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]{8,})"),                 # Authorization: Bearer …
    re.compile(r"(?i)\b((?:password|passwd|pwd|secret|token|api[_-]?key)\s*[=:]\s*)([^\s,;&'\"]+)"),
    re.compile(r"(?i)(://[^:/@\s]+:)([^@/\s]+)(@)"),                         # user:password@host in URLs
]


def redact_text(text: str) -> str:
    for pattern in _PATTERNS:
        if pattern.groups >= 3:
            text = pattern.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
        elif pattern.groups == 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{MASK}", text)
        else:
            text = pattern.sub(MASK, text)
    return text


def redact(value: Any) -> Any:
    """Redact strings by pattern and mapping values by key name, recursively."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: (MASK if isinstance(k, str) and _SECRET_KEY.search(k) and v not in (None, "") else redact(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
