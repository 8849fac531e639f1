"""`{{ path.to.value }}` templates in runbook step parameters.

A runbook is written once and run against many environments and incidents, so its parameters name values
(`{{ env.database.instance }}`, `{{ steps.restore.outputs.endpoint }}`) instead of holding them. The syntax is
deliberately tiny — dotted paths and one filter, `| default(...)` — so that the catalog validator can see every
reference statically (`references`) and refuse a typo when the file loads, not at 3 a.m. when the step runs.

A string that is exactly one template keeps the value's type (`{{ cmd.time }}` stays a `datetime`, a replica
count stays an `int`), because providers need real values, not their printed form. Templates embedded in text
are formatted: datetimes as ISO-8601 UTC with `Z`, everything else with `str()`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runbooks.errors import CommandError

__all__ = ["TemplateError", "format_value", "missing", "references", "render"]

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_PATH = re.compile(r"^[A-Za-z_][\w-]*(?:\.[\w-]+)*$")
_DEFAULT = re.compile(r"^default\((.*)\)$", re.DOTALL)
_MISSING = object()

SYNTAX_HELP = "{{ path.to.value }} or {{ path.to.value | default('fallback') }}"


class TemplateError(CommandError):
    """A template names a value that is not there, or is not a template at all.

    A `CommandError` because at run time it is a business refusal (the environment lacks a setting the runbook
    needs), shown to the user; the catalog loader turns the syntax variant into a `ConfigError` with the file.
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class _Expr:
    """One parsed `{{ … }}`: a path and an optional fallback (a literal, or another path)."""

    source: str
    path: str
    has_default: bool = False
    default_literal: Any = None
    default_path: str = ""

    def paths(self) -> list[str]:
        return [self.path, self.default_path] if self.default_path else [self.path]


def _parse_expr(body: str) -> _Expr:
    source = "{{" + body + "}}"
    head, bar, tail = body.partition("|")
    path = head.strip()
    if not _PATH.match(path):
        raise TemplateError(f"{source} is not a valid template (expected {SYNTAX_HELP})", path=path)
    if not bar:
        return _Expr(source=source, path=path)
    match = _DEFAULT.match(tail.strip())
    if match is None:
        raise TemplateError(f"{source}: unknown filter {tail.strip()!r} (the only filter is default(...): "
                            f"{SYNTAX_HELP})", path=path)
    arg = match.group(1).strip()
    if _PATH.match(arg) and arg not in {"True", "False", "None"}:
        return _Expr(source=source, path=path, has_default=True, default_path=arg)
    try:
        literal = ast.literal_eval(arg)
    except (ValueError, SyntaxError):
        raise TemplateError(f"{source}: default({arg}) needs a quoted string, a number or a path "
                            f"(expected {SYNTAX_HELP})", path=path) from None
    return _Expr(source=source, path=path, has_default=True, default_literal=literal)


def _parse(text: str) -> list[str | _Expr]:
    """Split a string into literal text and expressions; an unmatched `{{` is an error, not literal text."""
    parts: list[str | _Expr] = []
    pos = 0
    for match in _TEMPLATE.finditer(text):
        if match.start() > pos:
            parts.append(text[pos:match.start()])
        parts.append(_parse_expr(match.group(1)))
        pos = match.end()
    if pos < len(text):
        parts.append(text[pos:])
    for part in parts:
        if isinstance(part, str) and ("{{" in part or "}}" in part):
            raise TemplateError(f"unbalanced braces in {text!r} (expected {SYNTAX_HELP})")
    return parts


def _lookup(path: str, context: Mapping[str, Any]) -> Any:
    """The value at `path`, or `_MISSING` — with the deepest existing prefix for the error message."""
    current: Any = context
    for segment in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(segment, _MISSING)
        elif isinstance(current, Sequence) and not isinstance(current, str) and segment.isdigit():
            index = int(segment)
            current = current[index] if index < len(current) else _MISSING
        elif not segment.startswith("_") and hasattr(current, segment):
            current = getattr(current, segment)
        else:
            current = _MISSING
        if current is _MISSING:
            return _MISSING
    return current


def _missing(expr: _Expr, path: str, context: Mapping[str, Any]) -> TemplateError:
    parent, _, _ = path.rpartition(".")
    known = _lookup(parent, context) if parent else context
    hint = ""
    if isinstance(known, Mapping) and known:
        hint = f" ({parent or 'the context'} has: {', '.join(sorted(str(k) for k in known))})"
    return TemplateError(f"{expr.source}: {path} is not set{hint}", path=path)


def _evaluate(expr: _Expr, context: Mapping[str, Any]) -> Any:
    value = _lookup(expr.path, context)
    if value is not _MISSING and (value is not None or not expr.has_default):
        return value
    if not expr.has_default:
        raise _missing(expr, expr.path, context)
    if not expr.default_path:
        return expr.default_literal
    fallback = _lookup(expr.default_path, context)
    if fallback is _MISSING:
        raise _missing(expr, expr.default_path, context)
    return fallback


def format_value(value: Any) -> str:
    """How a value reads inside text: datetimes as ISO-8601 UTC with `Z` (the form every drbot time uses)."""
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo is not None else value
        return moment.isoformat().replace("+00:00", "Z")
    return str(value)


def _render_str(text: str, context: Mapping[str, Any]) -> Any:
    parts = _parse(text)
    if len(parts) == 1 and isinstance(parts[0], _Expr):
        return _evaluate(parts[0], context)
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        value = _evaluate(part, context)
        if value is None:
            raise TemplateError(f"{part.source} has no value and cannot be put into {text!r}", path=part.path)
        out.append(format_value(value))
    return "".join(out)


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template in `value` (dicts, lists and tuples recursively; other values unchanged)."""
    if isinstance(value, str):
        return _render_str(value, context)
    if isinstance(value, Mapping):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if isinstance(value, tuple):
        return tuple(render(item, context) for item in value)
    return value


def references(value: Any) -> set[str]:
    """Every path `value` refers to, fallbacks included. Raises `TemplateError` on malformed templates."""
    found: set[str] = set()
    if isinstance(value, str):
        for part in _parse(value):
            if isinstance(part, _Expr):
                found.update(part.paths())
    elif isinstance(value, Mapping):
        for item in value.values():
            found |= references(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found |= references(item)
    return found


def _satisfied(expr: _Expr, context: Mapping[str, Any]) -> bool:
    value = _lookup(expr.path, context)
    if value is not _MISSING and value is not None:
        return True
    if not expr.has_default:
        return False
    if not expr.default_path:
        return expr.default_literal is not None
    fallback = _lookup(expr.default_path, context)
    return fallback is not _MISSING and fallback is not None


def missing(value: Any, context: Mapping[str, Any]) -> list[str]:
    """The paths in `value` (recursively) that `context` cannot fill, each once, in the order they appear.

    Stricter than `render`, on purpose: a path counts as filled only when it is present and not None, or when its
    `| default(...)` fallback is (a literal other than None, or a path that is filled). That is the question "would
    this step get a real value", asked before a run starts. When the fallback path is missing too, the primary path
    is the one reported: it is the one to set. Raises `TemplateError` on malformed templates.
    """
    found: list[str] = []
    if isinstance(value, str):
        for part in _parse(value):
            if isinstance(part, _Expr) and part.path not in found and not _satisfied(part, context):
                found.append(part.path)
        return found
    items: list[Any] = []
    if isinstance(value, Mapping):
        items = list(value.values())
    elif isinstance(value, list | tuple):
        items = list(value)
    for item in items:
        found.extend(path for path in missing(item, context) if path not in found)
    return found
