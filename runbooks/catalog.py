"""The runbook catalog: the built-in runbooks and the incident checklist, loaded from YAML and refused early.

A runbook file is read when drbot starts (and by `drbot check`), long before anyone needs it; every mistake a
person can make in one — an unknown key, a misspelt action or parameter, a step that reads the output of a step
it does not wait for, a side effect without the two-person rule — is refused then, with the file and the key
path (`database-pitr.yml: steps[2].params.restore_tme: …`), so that nothing is discovered mid-incident.
The rules themselves live in `runbooks.catalog_checks`; this module reads files and assembles the `Catalog`.

Each shortcut `/dr` command runs exactly one runbook, which its class names (`RestoreDatabase.runbook_name` is
`database-pitr`; see `runbooks.commands.RUNBOOK_COMMANDS`); `COMMAND_RUNBOOKS` collects them, and loading the
built-in catalog refuses to go on when one of those runbooks is missing.

`/dr run <runbook> <env> [key=value …]` runs any catalog runbook by name (e.g. `backup-verification`).
Runbooks in `extra_dirs` (an organisation's own) are loaded after the built-ins and replace a built-in of the
same name, so a team can adapt `database-pitr` without forking drbot; within one directory a name is unique.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from runbooks.catalog_checks import check_checklist, check_runbook
from runbooks.commands import RUNBOOK_COMMANDS
from runbooks.drills import drill_variant
from runbooks.errors import ConfigError, NotFound
from runbooks.models import Checklist, Run, Runbook

__all__ = [
    "CATALOG_DIR",
    "CHECKLIST_FILE",
    "COMMAND_RUNBOOKS",
    "Catalog",
    "load_catalog",
    "load_checklist",
    "load_runbook",
    "parse_duration",
]

COMMAND_RUNBOOKS: Mapping[str, str] = {command.__name__: command.runbook_name for command in RUNBOOK_COMMANDS}
"""Shortcut command class name → the runbook it runs (each class names its own: `runbooks.commands`)."""

CATALOG_DIR = Path(__file__).parent / "catalog"
CHECKLIST_FILE = "incident-checklist.yml"
_SUFFIXES = (".yml", ".yaml")

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Catalog:
    """Every runbook by name, the incident checklist, and where each came from (for `drbot check`)."""

    runbooks: Mapping[str, Runbook]
    checklist: Checklist
    sources: Mapping[str, Path] = field(default_factory=dict)

    def get(self, name: str) -> Runbook:
        """The runbook called `name`; an unknown name is a user's typo, so the reply lists the real ones."""
        runbook = self.runbooks.get(name)
        if runbook is not None:
            return runbook
        close = difflib.get_close_matches(name, list(self.runbooks), n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise NotFound(f"There is no runbook called {name!r}.{hint} "
                       f"Known runbooks: {', '.join(sorted(self.runbooks))} (see /dr runbooks).")

    def for_run(self, run: Run) -> Runbook:
        """The runbook `run` follows: its drill variant for a drill (`runbooks.drills.drill_variant`)."""
        runbook = self.get(run.runbook)
        return drill_variant(runbook) if run.drill else runbook

    def for_command(self, command: str) -> Runbook:
        """The runbook a `/dr` command runs, by the command's class name (`RestoreDatabase`)."""
        name = COMMAND_RUNBOOKS.get(command)
        if name is None:
            raise NotFound(f"No runbook is mapped to the command {command!r} "
                           f"(mapped: {', '.join(sorted(COMMAND_RUNBOOKS))}).")
        return self.get(name)


# --------------------------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+)\s*([wdhms])")
_DURATION = re.compile(r"^\s*(?:\d+\s*[wdhms]\s*)+$")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(text: str) -> timedelta:
    """`15m`, `4h`, `1h30m`, `2d` → timedelta. Kept local so the catalog does not depend on the timeline."""
    if not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration (expected e.g. 15m, 4h, 1h30m, 2d)")
    total = timedelta()
    for amount, unit in _DURATION_PART.findall(text):
        total += timedelta(**{_UNITS[unit]: int(amount)})
    return total


# --------------------------------------------------------------------------------------------- reading


def _shown(path: Path) -> str:
    """A path as people should see it: relative to where they stand, or to the package for built-ins."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        pass
    try:
        return f"runbooks/catalog/{resolved.relative_to(CATALOG_DIR.resolve())}"
    except ValueError:
        return str(path)


def _read_yaml(path: Path) -> dict[str, Any]:
    shown = _shown(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot be read ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{shown}{where}: not valid YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}: expected a mapping of keys (name: …, title: …, steps: […]), "
                          f"got {type(data).__name__}")
    return data


def key_path(loc: Sequence[str | int]) -> str:
    """pydantic's `('steps', 2, 'action')` → `steps[2].action`, the form people read in YAML."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that holds the keys at `loc`, to list the expected keys next to an unknown one."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        current = info.annotation
        while get_origin(current) in (tuple, list) and get_args(current):
            current = get_args(current)[0]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _explain(model: type[BaseModel], error: Mapping[str, Any]) -> str:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        expected = f" (expected: {', '.join(owner.model_fields)})" if owner is not None else ""
        return f"{key_path(loc)}: unknown key{expected}"
    if kind == "missing":
        return f"{key_path(loc)}: required key is missing"
    message = "expected a list, e.g. [a, b]" if kind in {"tuple_type", "list_type"} else error["msg"]
    shown_input = repr(error.get("input"))
    if len(shown_input) > 60:
        shown_input = shown_input[:57] + "..."
    return f"{key_path(loc) or '(top level)'}: {message} (got {shown_input})"


def _validate(model: type[M], data: Mapping[str, Any], *, shown: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [f"{shown}: {_explain(model, err)}" for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from exc


def load_runbook(path: Path) -> Runbook:
    """Read and check one runbook file; any problem is a `ConfigError` naming the file and key path."""
    shown = _shown(path)
    runbook = _validate(Runbook, _read_yaml(path), shown=shown)
    problems = check_runbook(runbook)
    if runbook.name != path.stem:
        problems.insert(0, f"name: {runbook.name!r} must match the file name ({path.stem!r}), "
                           f"so that the runbook can be found by name")
    if problems:
        raise ConfigError("\n".join(f"{shown}: {problem}" for problem in problems))
    return runbook


def _durations(data: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """Turn `15m`-style strings into timedeltas where the checklist has durations; bare numbers are refused
    because `due: 15` would silently mean fifteen seconds."""

    def convert(value: Any, where: str) -> Any:
        if isinstance(value, str):
            try:
                return parse_duration(value)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
        elif isinstance(value, int | float) and not isinstance(value, bool) and value != 0:
            problems.append(f"{where}: write durations with a unit, e.g. 15m or 4h (got {value!r})")
        return value

    phases = data.get("phases")
    if not isinstance(phases, list):
        return data
    out_phases: list[Any] = []
    for i, phase in enumerate(phases):
        if not isinstance(phase, dict):
            out_phases.append(phase)
            continue
        phase = dict(phase)
        for key in ("starts", "ends"):
            if key in phase:
                phase[key] = convert(phase[key], f"phases[{i}].{key}")
        items = phase.get("items")
        if isinstance(items, list):
            phase["items"] = [
                {**item, "due": convert(item["due"], f"phases[{i}].items[{j}].due")}
                if isinstance(item, dict) and "due" in item else item
                for j, item in enumerate(items)
            ]
        out_phases.append(phase)
    return {**data, "phases": out_phases}


def load_checklist(path: Path) -> Checklist:
    """Read and check the incident checklist (phases with items due at offsets from detection)."""
    shown = _shown(path)
    problems: list[str] = []
    data = _durations(_read_yaml(path), problems)
    if problems:
        raise ConfigError("\n".join(f"{shown}: {problem}" for problem in problems))
    checklist = _validate(Checklist, data, shown=shown)
    problems = check_checklist(checklist)
    if problems:
        raise ConfigError("\n".join(f"{shown}: {problem}" for problem in problems))
    return checklist


# --------------------------------------------------------------------------------------------- the catalog


def _yaml_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise ConfigError(f"{_shown(directory)}: runbook directory does not exist")
    return sorted(p for p in directory.iterdir() if p.suffix in _SUFFIXES and p.is_file())


def load_catalog(directory: Path | None = None, *, extra_dirs: Sequence[Path] = ()) -> Catalog:
    """Load the built-in catalog (or `directory`), then `extra_dirs` in order, later names replacing earlier.

    The first directory must hold the incident checklist; an extra directory may replace it too.
    """
    builtin = directory is None
    runbooks: dict[str, Runbook] = {}
    sources: dict[str, Path] = {}
    checklist: Checklist | None = None
    for folder in [directory or CATALOG_DIR, *extra_dirs]:
        seen: dict[str, Path] = {}
        for path in _yaml_files(folder):
            if path.stem == Path(CHECKLIST_FILE).stem:
                checklist = load_checklist(path)
                continue
            if path.stem in seen:
                raise ConfigError(f"{_shown(path)}: runbook {path.stem!r} is also defined in "
                                  f"{_shown(seen[path.stem])}; keep one file per runbook")
            seen[path.stem] = path
            runbooks[path.stem] = load_runbook(path)
            sources[path.stem] = path
    first = directory or CATALOG_DIR
    if checklist is None:
        raise ConfigError(f"{_shown(first)}: no {CHECKLIST_FILE} found; the incident checklist is required")
    if builtin:
        missing = sorted(set(COMMAND_RUNBOOKS.values()) - set(runbooks))
        if missing:
            raise ConfigError(f"{_shown(first)}: built-in runbooks missing: {', '.join(missing)} "
                              f"(is the package data installed?)")
    return Catalog(runbooks=dict(sorted(runbooks.items())), checklist=checklist, sources=sources)
