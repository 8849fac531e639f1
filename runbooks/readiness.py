"""Can this runbook run in this environment — and if not, exactly what to add to drbot.yml.

A runbook reads its environment through templates (`{{ env.database.instance }}`, `{{ env.settings.integrity_query
}}`). A value nobody configured used to surface as a `TemplateError` in the middle of a run, after the approval and
possibly after a side effect, while `drbot check` said OK. These functions answer the question statically, from the
runbook and the configured `Environment`, so `drbot check` says it at deploy time and the engine can refuse a request
(or skip the steps an absent optional setting feeds) before anything changes. Each answer is a `Gap`: the drbot.yml
path to add, what the value is for and an example, so the fix is one edit without reading the runbook.

Only `env.*` is checked: `cmd.*` is the user's command (the grammar checks it), `steps.*` is produced during the
run, and `run`/`incident` always exist. `env` is evaluated as `planning.context` builds it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from runbooks.models import Environment, Runbook, StepSpec
from runbooks.planning import BUILTIN, action_of, resource_of
from runbooks.templating import missing

__all__ = ["Gap", "action_gaps", "gaps", "runbook_resources", "skipped_steps"]


@dataclass(frozen=True)
class _Hint:
    purpose: str
    example: str


# Every `env.<resource>.<key>` the built-in catalog reads. An organisation's own runbook may read other keys; those
# get the generic sentence of `_key_hint`.
_KEYS: Mapping[str, _Hint] = {
    "database.instance": _Hint("the primary database instance, which restores start from", "rag-engine-prod"),
    "database.replica.instance": _Hint("the cross-region read replica that is checked and promoted",
                                       "rag-engine-prod-replica"),
    "kubernetes.deployment": _Hint("the Deployment that runs the application", "rag-engine-api"),
    "kubernetes.namespace": _Hint("the namespace the application runs in", "rag-engine"),
    "kubernetes.velero_namespace": _Hint("the namespace Velero runs in", "velero"),
    "dns.zone_id": _Hint("the hosted zone that holds the public record", "Z123"),
    "dns.record": _Hint("the public name clients resolve", "api.rag-engine.com"),
    "dns.type": _Hint("the type of the public record", "A"),
    "dns.dr_target": _Hint("the address the record points at after a failover", "203.0.113.10"),
    "vectors.collection": _Hint("the vector collection that is restored and counted", "documents"),
    "objects.bucket": _Hint("the versioned bucket deleted objects are brought back in", "rag-engine-documents"),
}

_BLOCKS: Mapping[str, _Hint] = {
    "database": _Hint("the database, with its provider and primary instance",
                      "{provider: aws-rds, instance: rag-engine-prod, region: us-west-2}"),
    "dns": _Hint("the public DNS record and its DR target",
                 "{provider: route53, zone_id: Z123, record: api.rag-engine.com, type: A, dr_target: 203.0.113.10}"),
    "kubernetes": _Hint("the cluster and Deployment that run the application",
                        "{provider: kubernetes, context: prod, namespace: rag-engine, deployment: rag-engine-api}"),
    "vectors": _Hint("the vector database and its collection",
                     "{provider: qdrant, url: http://qdrant:6333, collection: documents}"),
    "objects": _Hint("the versioned bucket that holds the documents", "{provider: s3, bucket: rag-engine-documents}"),
    "pagerduty": _Hint("PagerDuty, where incident notes and resolutions are written back", "{provider: pagerduty}"),
}


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _named(steps: tuple[str, ...], titles: tuple[str, ...]) -> str:
    return _and([f"`{sid}` ({title})" for sid, title in zip(steps, titles, strict=True)])


@dataclass(frozen=True)
class Gap:
    """One value an environment lacks for a runbook. Optional gaps skip the steps that read them; the others
    mean the runbook cannot run there."""

    environment: str
    runbook: str
    path: str
    """Where it goes in drbot.yml: `environments.prod.settings.integrity_query`, `environments.prod.kubernetes`."""
    purpose: str
    example: str
    optional: bool
    steps: tuple[str, ...]
    """Ids of the steps that read it, in runbook order."""
    titles: tuple[str, ...]
    """Those steps' titles, in the same order."""

    def sentence(self) -> str:
        """`prod · database-pitr: needs environments.prod.settings.integrity_query (the SELECT …, e.g. …)`, or for
        an optional gap, which steps will be skipped and how to enable them."""
        where = f"{self.environment} · {self.runbook}"
        hint = f"{self.purpose}, e.g. {self.example}" if self.example else self.purpose
        if not self.optional:
            return f"{where}: needs {self.path} ({hint})"
        several = len(self.steps) > 1
        return (f"{where}: {self.path} is not set, so step{'s' if several else ''} {_named(self.steps, self.titles)} "
                f"will be skipped; set it to enable {'them' if several else 'it'} ({hint})")


def runbook_resources(runbook: Runbook) -> frozenset[str]:
    """The resources (`database`, `kubernetes`, …) whose providers the runbook's steps call."""
    return frozenset(resource_of(step) for step in runbook.steps) - {BUILTIN}


def gaps(runbook: Runbook, environment: Environment) -> list[Gap]:
    """Everything `environment` lacks for `runbook`, required and optional, missing resource blocks first, then
    in the order the steps read them. Empty means every step can run."""
    return _Assessment(runbook, environment).gaps()


def skipped_steps(runbook: Runbook, environment: Environment) -> dict[str, str]:
    """Step id → why it will be skipped (the optional gap's sentence), for the steps an absent optional setting
    feeds. Steps also blocked by a required gap are listed too; the required gaps refuse the run anyway."""
    skipped: dict[str, str] = {}
    for gap in gaps(runbook, environment):
        if gap.optional:
            for step_id in gap.steps:
                skipped.setdefault(step_id, gap.sentence())
    return skipped


def action_gaps(runbook: Runbook, environment: Environment, actions: Mapping[str, frozenset[str]]) -> list[str]:
    """One sentence per action a step needs that the configured provider does not implement.

    `actions` maps a resource to its provider's `actions()`; a resource absent from it (no block, or a provider that
    could not be built) is not judged here: `gaps` or the provider's own error already says so. Steps that will be
    skipped need nothing.
    """
    skipped = skipped_steps(runbook, environment)
    needed: dict[tuple[str, str], list[StepSpec]] = {}
    for step in runbook.steps:
        resource = resource_of(step)
        if step.id in skipped or resource not in actions or resource not in environment.resources:
            continue
        if action_of(step) not in actions[resource]:
            needed.setdefault((resource, action_of(step)), []).append(step)
    sentences = []
    for (resource, action), steps in needed.items():
        named = _named(tuple(s.id for s in steps), tuple(s.title for s in steps))
        implemented = ", ".join(sorted(actions[resource])) or "nothing"
        provider = environment.resources[resource].provider
        sentences.append(f"{environment.name} · {runbook.name}: step{'s' if len(steps) > 1 else ''} {named} "
                         f"need{'' if len(steps) > 1 else 's'} {resource}.{action}, which the {provider} provider "
                         f"of environments.{environment.name}.{resource} does not implement "
                         f"(it implements: {implemented})")
    return sentences


# --------------------------------------------------------------------------------------------- how it is decided


class _Anything(Mapping[str, Any]):
    """A root this module does not judge (`cmd`, `steps`, `run`, `incident`): every path below it is set."""

    def __getitem__(self, key: str) -> Any:
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class _StepsExcept(_Anything):
    """Step outputs as they will be when `skipped` steps do not run: theirs are absent, the others' are set."""

    def __init__(self, skipped: frozenset[str]) -> None:
        self.skipped = skipped

    def __getitem__(self, key: str) -> Any:
        if key in self.skipped:
            raise KeyError(key)
        return _ANYTHING

    def get(self, key: str, default: Any = None) -> Any:
        return default if key in self.skipped else _ANYTHING


_ANYTHING = _Anything()


def _env_context(environment: Environment) -> dict[str, Any]:
    """`env` exactly as `planning.context` builds it."""
    env: dict[str, Any] = {"name": environment.name, "tier": environment.tier, "settings": dict(environment.settings)}
    for name, resource in environment.resources.items():
        env[name] = {"provider": resource.provider, **resource.settings()}
    return env


@dataclass
class _Found:
    hint: _Hint
    optional: bool
    steps: set[str] = field(default_factory=set)


class _Assessment:
    """One runbook against one environment: collect the unresolvable `env.*` paths per drbot.yml path, then decide
    which optional ones really are optional."""

    def __init__(self, runbook: Runbook, environment: Environment) -> None:
        self.runbook = runbook
        self.environment = environment
        self.base = f"environments.{environment.name}"
        self.context: dict[str, Any] = {"env": _env_context(environment), "cmd": _ANYTHING, "steps": _ANYTHING,
                                        "run": _ANYTHING, "incident": _ANYTHING}
        self.found: dict[str, _Found] = {}

    def gaps(self) -> list[Gap]:
        for resource in sorted(runbook_resources(self.runbook) - set(self.environment.resources)):
            users = {s.id for s in self.runbook.steps if resource_of(s) == resource}
            self._add(f"{self.base}.{resource}", _BLOCKS.get(resource, _block_hint(resource)), False, users)
        for step in self.runbook.steps:
            for path in missing(step.params, self.context):
                if path.startswith("env."):
                    self._add(*self._locate(path.split(".")[1:]), {step.id})
        self._require_what_later_steps_read()
        order = {s.id: i for i, s in enumerate(self.runbook.steps)}
        titles = {s.id: s.title for s in self.runbook.steps}
        result = []
        for path, found in self.found.items():
            steps = tuple(sorted(found.steps, key=order.__getitem__))
            result.append(Gap(environment=self.environment.name, runbook=self.runbook.name, path=path,
                              purpose=found.hint.purpose, example=found.hint.example, optional=found.optional,
                              steps=steps, titles=tuple(titles[s] for s in steps)))
        return result

    def _add(self, path: str, hint: _Hint, optional: bool, steps: set[str]) -> None:
        found = self.found.setdefault(path, _Found(hint=hint, optional=optional))
        found.steps |= steps

    def _locate(self, parts: list[str]) -> tuple[str, _Hint, bool]:
        """An `env.` path (without `env`) → its drbot.yml path, what it is for, and whether it is optional."""
        name, rest = parts[0], ".".join(parts[1:])
        if name == "settings":
            key = parts[1] if len(parts) > 1 else ""
            spec = self.runbook.settings.get(key)
            if spec is None:
                return (f"{self.base}.settings.{rest}",
                        _Hint(f"a value {self.runbook.name} reads as {{{{ env.settings.{rest} }}}}", ""), False)
            return f"{self.base}.settings.{rest}", _Hint(spec.help, spec.example), spec.optional
        if name not in self.environment.resources and name not in {"name", "tier"}:
            return f"{self.base}.{name}", _BLOCKS.get(name, _block_hint(name)), False
        hint = _KEYS.get(f"{name}.{rest}") or _Hint(
            f"the {rest} of the environment's {name}, read by the runbook as {{{{ env.{name}.{rest} }}}}", "")
        return f"{self.base}.{name}.{rest}", hint, False

    def _require_what_later_steps_read(self) -> None:
        """An optional setting stops being optional when a step that runs reads an output of a step it skips
        (backup-verification's `record` reports the integrity step's count): skipping would only move the failure."""
        optional = [found for found in self.found.values() if found.optional]
        skipped = frozenset(step for found in optional for step in found.steps)
        if not skipped:
            return
        context = {**self.context, "steps": _StepsExcept(skipped)}
        starved: set[str] = set()
        for step in self.runbook.steps:
            if step.id not in skipped:
                starved |= {path.split(".")[1] for path in missing(step.params, context)
                            if path.startswith("steps.") and path.split(".")[1] in skipped}
        for found in optional:
            if found.steps & starved:
                found.optional = False


def _block_hint(resource: str) -> _Hint:
    return _Hint(f"the environment's {resource}, with its provider", "{provider: sandbox}")
