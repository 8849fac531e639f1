"""What each durable step of a run does: plan and pre-flight, then begin, start, wait, verify, finish.

These are plain methods; `runbooks.workflows` wraps each in a DBOS step so it is checkpointed. Every method is
safe to run twice (DBOS steps are at-least-once): events carry dedupe keys, requests are keyed, provider starts
are idempotent, and the store updates are overwrites.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from runbooks import approvals as rule
from runbooks import drills, faults, planning, readiness
from runbooks.drills import Ledger
from runbooks.errors import DrbotError, PreflightFailed, ProviderError
from runbooks.incidents import Incidents
from runbooks.models import EventKind, Plan, Run, Runbook, RunStatus, StepRun, StepSpec, StepStatus
from runbooks.outlook import HISTORY, Outlook, outlook, recovery_time
from runbooks.ports import Operation, OperationStatus
from runbooks.records import Records
from runbooks.redact import redact, redact_text
from runbooks.run_context import RunContext
from runbooks.step_results import Began, Preflight, Started, StepResult
from runbooks.timeline import format_duration

log = logging.getLogger("drbot.engine")


class Execution:
    """The step bodies of a run (`runbooks.workflows.Steps`): plan and pre-flight, then each step's begin, start,
    wait, verify and finish. The approval gates between them are `runbooks.gates`."""

    def __init__(self, ctx: RunContext, *, incidents: Incidents, records: Records) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.catalog = ctx.catalog
        self.clock = ctx.clock
        self.settings = ctx.settings
        self.incidents = incidents
        self.records = records
        self.ledger = Ledger(ctx.store)
        self.on_concluded: Callable[[Run], None] = lambda run: None
        """Told when a run has said its last word (`runbooks.ticks.Scheduler.concluded`)."""

    def settle(self, run_id: str, *, cause: str, error_id: str = "") -> str:
        """End the run failed, visibly (the workflow's last line of defence)."""
        return self.ctx.settle(run_id, cause=cause, error_id=error_id)

    # ------------------------------------------------------------------------------------------------ plan

    def preflight(self, run_id: str) -> Preflight:
        """Resolve the plan, ask each provider for its details and read-only checks, hash the plan. Whatever is
        raised here ends the run `failed`: nothing has been changed yet, so there is nothing to decide."""
        try:
            return self._preflight(run_id)
        except Exception as exc:
            fault = self.ctx.fault(exc, where=f"{run_id} pre-flight", run_id=run_id)
            self.settle(run_id, cause=f"it could not be planned: {fault.message}", error_id=fault.error_id)
            return {"ok": False, "needs_approval": False}

    def _preflight(self, run_id: str) -> Preflight:
        run = self.ctx.run(run_id)
        if run.status.finished:  # cancelled (or settled) before its workflow got here: nothing to plan
            return {"ok": False, "needs_approval": False}
        runbook = self.catalog.for_run(run)
        env = self.settings.environment(run.environment)
        skipped = readiness.skipped_steps(runbook, env)
        plan = planning.build_plan(run=run, runbook=runbook, environment=env, skipped=skipped)
        details: dict[str, dict[str, Any]] = {}
        problems: list[str] = []
        for step, planned in zip(runbook.steps, plan.steps, strict=True):
            if planned.skipped or planned.provider == planning.BUILTIN or planning.has_pending(planned.params):
                continue
            provider = self.ctx.provider_for(run, step)
            action = planning.action_of(step)
            try:
                details[step.id] = self.ctx.with_retries(
                    f"{run.id}/{step.id} plan",
                    partial(provider.plan, action=action, params=planned.params))
                found = self.ctx.with_retries(
                    f"{run.id}/{step.id} preflight",
                    partial(provider.preflight, action=action, params=planned.params))
            except ProviderError as exc:
                found = [exc.message]
            problems.extend(f"{step.title}: {p}" for p in found)
        plan = planning.build_plan(run=run, runbook=runbook, environment=env, details=details, skipped=skipped)
        plan_hash = rule.plan_hash(plan)
        policy = self.settings.approvals(env, drill=run.drill)
        needs_approval = policy.required > 0 and any(s.guarded and not s.skipped for s in plan.steps)
        shown = Plan.model_validate(redact(plan.model_dump(mode="json")))
        self.store.update_run(run.id, plan=shown, plan_hash=plan_hash)
        ahead = self._outlook(run, shown)
        notes = drills.plan_lines(shown, summary=runbook.drill.summary if runbook.drill and run.drill else "")
        self.ctx.emit(run, EventKind.RUN_PLANNED, "\n".join([
            f"{'Drill plan' if run.drill else 'Plan'} for {run.id} ({runbook.title}) on {env.name}, plan "
            f"{rule.short_hash(plan_hash)}", *notes, *ahead.lines()]), key=f"{run.id}:planned",
            data={"plan": shown.model_dump(mode="json"), "plan_hash": plan_hash, "outlook": ahead.data(),
                  "ahead": ahead.lines(), "notes": notes})
        if problems:
            reason = "; ".join(problems)
            self.store.update_run(run.id, status=RunStatus.FAILED, reason=f"pre-flight failed: {reason}",
                                    finished_at=self.clock.now())
            self.ctx.emit(run, EventKind.RUN_PREFLIGHT_FAILED, f"Pre-flight failed for {run.id}; nothing was changed. "
                       + " ".join(f"• {p}" for p in problems), key=f"{run.id}:preflight",
                       data={"problems": problems, "tell": run.requested_by})
            return {"ok": False, "needs_approval": False}
        self.ctx.emit(run, EventKind.RUN_PREFLIGHT_OK, f"Pre-flight passed for {run.id}.", key=f"{run.id}:preflight")
        status = RunStatus.AWAITING_APPROVAL if needs_approval else RunStatus.RUNNING
        self.store.update_run(run.id, status=status)
        return {"ok": True, "needs_approval": needs_approval}

    def _outlook(self, run: Run, plan: Plan) -> Outlook:
        """The forecast and the data loss shown beside the plan (not hashed: they are expectations)."""
        incident = self.incidents.get(run.incident_id)
        past = [t for r in self.store.succeeded_runs(runbook=run.runbook, environment=run.environment, limit=HISTORY)
                if (t := recovery_time(r)) is not None]
        return outlook(plan, past=past, incident=incident, tier=self.settings.tier(incident.tier),
                       now=self.clock.now())

    def structure(self, run_id: str) -> list[list[str]]:
        run = self.ctx.run(run_id)
        return [[s.id for s in wave] for wave in planning.waves(self.catalog.for_run(run))]

    # ------------------------------------------------------------------------------------------------ run state

    def skip(self, run_id: str, step_id: str, attempt: int) -> None:
        run = self.ctx.run(run_id)
        spec = self.ctx.spec(run, step_id)
        now = self.clock.now()
        self.store.save_step(StepRun(run_id=run.id, step_id=step_id, title=spec.title, attempt=attempt,
                                       status=StepStatus.SKIPPED, finished_at=now))
        self.ctx.emit(run, EventKind.STEP_SKIPPED, f"{spec.title}: skipped by decision.",
                   key=f"{run.id}:{step_id}:skipped")

    # ------------------------------------------------------------------------------------------------ steps


    # Each step body below turns whatever it raises into the step's failure (with an error id), so the run pauses
    # for a person's retry / skip / abort exactly as for a provider's refusal: by then something may have changed.
    def begin(self, run_id: str, step_id: str, attempt: int) -> Began:
        """Render the step's parameters from the outputs so far and record its start."""
        try:
            return self._begin(run_id, step_id, attempt)
        except Exception as exc:
            fault = self.ctx.fault(exc, where=f"{run_id}/{step_id} begin", run_id=run_id)
            return {"ok": False, "error": fault.text, "params": {}, "builtin": False}

    def _begin(self, run_id: str, step_id: str, attempt: int) -> Began:
        run = self.ctx.run(run_id)
        spec = self.ctx.spec(run, step_id)
        planned = next((s for s in run.plan.steps if s.id == step_id), None) if run.plan else None
        if planned is not None and planned.skipped:
            return {"ok": True, "skipped": planned.skipped, "error": "", "params": {}, "builtin": False}
        done = {s.step_id: s.outputs for s in self.store.steps_for(run_id=run.id)
                if s.status is StepStatus.SUCCEEDED}
        runbook = self.catalog.for_run(run)
        env = self.settings.environment(run.environment)
        ctx = planning.context(run=run, runbook=runbook, environment=env, outputs=done)
        now = self.clock.now()
        if spec.creates is not None:  # on the ledger before the provider is asked: a crash cannot hide it
            self.ledger.record(run_id=run.id, incident_id=run.incident_id, environment=env.name, step_id=step_id,
                               kind=spec.creates.kind, name=planning.created_name(spec, ctx),
                               provider=env.resources[planning.resource_of(spec)].provider, at=now)
        key = f"{run.id}:{step_id}:{attempt}:started"
        if not self.store.has_event(dedupe_key=key):
            self.store.save_step(StepRun(run_id=run.id, step_id=step_id, title=spec.title, attempt=attempt,
                                           status=StepStatus.RUNNING, started_at=now))
        again = f" (attempt {attempt})" if attempt > 1 else ""
        self.ctx.emit(run, EventKind.STEP_STARTED, f"{spec.title}: started{again}.", key=key,
                   data={"step_id": step_id, "attempt": attempt, "action": spec.action})
        try:
            params = planning.render_params(spec, ctx)
        except DrbotError as exc:
            return {"ok": False, "error": faults.describe(exc, environment=env.name), "params": {}, "builtin": False}
        return {"ok": True, "error": "", "params": params,
                "builtin": planning.resource_of(spec) == planning.BUILTIN}

    def start(self, run_id: str, step_id: str, params: dict[str, Any]) -> Started:
        try:
            return self._start(run_id, step_id, params)
        except ProviderError as exc:
            return {"ok": False, "error": exc.message}
        except Exception as exc:
            return {"ok": False, "error": self.ctx.fault(exc, where=f"{run_id}/{step_id} start", run_id=run_id).text}

    def _start(self, run_id: str, step_id: str, params: dict[str, Any]) -> Started:
        run = self.ctx.run(run_id)
        spec = self.ctx.spec(run, step_id)
        provider = self.ctx.provider_for(run, spec)
        action = planning.action_of(spec)
        # A clean-up step is not checked again here: it must be safe to start as it is (`delete_instance` refuses
        # anything but a scratch instance at start, and attaches to one already gone), and "already gone" — the
        # step that would have made it failed first — is what its pre-flight would refuse.
        cleanup = _is_cleanup(self.catalog.for_run(run), step_id)
        if not cleanup and (spec.guarded or planning.has_pending(self._planned_params(run, step_id))):
            problems = self.ctx.with_retries(f"{run.id}/{step_id} preflight",
                                          lambda: provider.preflight(action=action, params=params))
            if problems:
                raise PreflightFailed("; ".join(problems), provider=provider.kind)
        op: Operation = self.ctx.with_retries(f"{run.id}/{step_id} start",
                                           lambda: provider.start(action=action, params=params, run_id=run.id))
        # Keyed by the step's attempt, not the operation: a read-only action gets a fresh operation each time it
        # is started, so a start repeated after a crash would otherwise be told twice.
        attempt = max((s.attempt for s in self.store.steps_for(run_id=run.id) if s.step_id == step_id), default=1)
        self.ctx.emit(run, EventKind.STEP_OPERATION, f"{spec.title}: {provider.kind} {action} started"
                   + (f" on {op.target}" if op.target else "") + ".", key=f"{run.id}:{step_id}:{attempt}:operation",
                   data={"operation": op.model_dump(mode="json"), "step_id": step_id, "attempt": attempt})
        return {"ok": True, "op": op.model_dump(mode="json")}

    def _planned_params(self, run: Run, step_id: str) -> dict[str, Any]:
        if run.plan is None:
            return {}
        return next((s.params for s in run.plan.steps if s.id == step_id), {})

    def wait(self, run_id: str, step_id: str, op_data: dict[str, Any]) -> StepResult:
        """Poll with capped exponential backoff until done; re-attaches after a crash (the same operation)."""
        try:
            return self._wait(run_id, step_id, op_data)
        except ProviderError as exc:
            return {"ok": False, "error": exc.message, "outputs": {}}
        except Exception as exc:
            fault = self.ctx.fault(exc, where=f"{run_id}/{step_id} wait", run_id=run_id)
            return {"ok": False, "error": fault.text, "outputs": {}}

    def _wait(self, run_id: str, step_id: str, op_data: dict[str, Any]) -> StepResult:
        run = self.ctx.run(run_id)
        spec = self.ctx.spec(run, step_id)
        provider = self.ctx.provider_for(run, spec)
        op = Operation.model_validate(op_data)
        delay = self.settings.poll.initial
        began = self.clock.now()
        last = ""
        while True:
            status: OperationStatus = self.ctx.with_retries(f"{run.id}/{step_id} poll",
                                                         lambda: provider.poll(operation=op))
            if status.status != last:
                last = status.status
                pct = f" ({status.progress:.0%})" if status.progress is not None and not status.done else ""
                self.ctx.emit(run, EventKind.STEP_PROGRESS, f"{spec.title}: {status.status}{pct}"
                           + (f" — {status.message}" if status.message and
                              not status.message.startswith(status.status) else ""),
                           key=f"{run.id}:{step_id}:{op.id}:{status.status}",
                           data={"step_id": step_id, "status": status.status, "progress": status.progress})
            if status.done:
                if status.failed:
                    return {"ok": False, "error": status.message or f"ended in status {status.status}",
                            "outputs": status.outputs}
                return {"ok": True, "error": "", "outputs": status.outputs}
            if self.store.cancel_requested(run.id) and not _is_cleanup(self.catalog.for_run(run), step_id):
                return {"ok": False, "cancelled": True, "error": "cancelled while waiting; the provider's "
                        f"operation {op.id} was not stopped and may still complete", "outputs": {}}
            self.clock.sleep(delay)
            delay = self.settings.poll.next_delay(delay, waited=(self.clock.now() - began).total_seconds())

    def verify(self, run_id: str, step_id: str, params: dict[str, Any], outputs: dict[str, Any]) -> list[str]:
        run = self.ctx.run(run_id)
        spec = self.ctx.spec(run, step_id)
        problems: list[str] = []
        if planning.resource_of(spec) != planning.BUILTIN:
            try:
                provider = self.ctx.provider_for(run, spec)
                problems.extend(provider.verify(action=planning.action_of(spec), params=params, outputs=outputs))
            except ProviderError as exc:
                problems.append(exc.message)
            except Exception as exc:
                problems.append(self.ctx.fault(exc, where=f"{run_id}/{step_id} verify", run_id=run_id).text)
        for check in spec.verify:
            actual = outputs.get(check.output)
            if not _compare(actual, check.op, check.value):
                problems.append(check.message or f"{check.output} is {actual!r}, expected {check.op} {check.value!r}")
        return problems

    def builtin(self, run_id: str, step_id: str, params: dict[str, Any]) -> StepResult:
        try:
            run = self.ctx.run(run_id)
            spec = self.ctx.spec(run, step_id)
            name = planning.action_of(spec)
            text = str(params.get("text") or self.records.run_report(run.id)) if name == "report" \
                else str(params.get("text", ""))
            kind = {"notify": EventKind.RUN_NOTICE, "report": EventKind.RUN_REPORT,
                    "record": EventKind.RUN_RESULT}[name]
            self.ctx.emit(run, kind, text, key=f"{run.id}:{step_id}:{kind}", data={"result": params.get("result")})
        except Exception as exc:
            return {"ok": False, "error": self.ctx.fault(exc, where=f"{run_id}/{step_id}", run_id=run_id).text,
                    "outputs": {}}
        return {"ok": True, "error": "", "outputs": {}}

    def finish(self, run_id: str, step_id: str, attempt: int, result: StepResult) -> str:
        """Record the step's end, its timeline facts, and whether service is now restored."""
        run = self.ctx.run(run_id)
        spec = self.ctx.spec(run, step_id)
        if result.get("skipped"):
            return self._not_configured(run, spec, attempt, str(result["skipped"]))
        steps = {s.step_id: s for s in self.store.steps_for(run_id=run.id)}
        started = steps[step_id].started_at if step_id in steps else None
        now = self.clock.now()
        outputs = dict(result.get("outputs") or {})
        if result.get("cancelled"):
            status = StepStatus.CANCELLED
        else:
            status = StepStatus.SUCCEEDED if result.get("ok") else StepStatus.FAILED
        error = redact_text(str(result.get("error") or ""))
        outputs = redact(outputs)
        self.store.save_step(StepRun(run_id=run.id, step_id=step_id, title=spec.title, attempt=attempt,
                                       status=status, started_at=started, finished_at=now, outputs=outputs,
                                       error=error))
        took = f" in {format_duration(now - started)}" if started else ""
        if status is StepStatus.SUCCEEDED:
            shown = ", ".join(f"{k}={v}" for k, v in outputs.items() if k in {"instance", "endpoint", "restore_time",
                              "replica_lag_seconds", "count", "points_count", "current", "restored", "phase"})
            self.ctx.emit(run, EventKind.STEP_COMPLETED,
                       f"{spec.title}: done{took}" + (f" ({shown})" if shown else "") + ".",
                       key=f"{run.id}:{step_id}:{attempt}:completed",
                       data={"step_id": step_id, "attempt": attempt, "outputs": outputs})
            self._record_facts(run, spec, outputs)
            if spec.removes:
                self.ledger.gone(run_id=run.id, step_ids=spec.removes, at=now)
            if spec.marks_restored:
                self.incidents.mark_restored(incident_id=run.incident_id, actor="drbot",
                                     why=f"{spec.title} completed ({run.id})", dedupe=f"{run.id}:restored")
        elif status is StepStatus.CANCELLED:
            self.ctx.emit(run, EventKind.STEP_CANCELLED, f"{spec.title}: {error}",
                       key=f"{run.id}:{step_id}:{attempt}:cancelled")
        else:
            self.ctx.emit(run, EventKind.STEP_FAILED, f"{spec.title}: failed{took}: {error}",
                       key=f"{run.id}:{step_id}:{attempt}:failed",
                       data={"step_id": step_id, "attempt": attempt, "error": error})
        return status.value

    # ------------------------------------------------------------------------------------------------ clean-up

    def cleanup(self, run_id: str) -> list[str]:
        """The clean-up steps to run now, in order: each one whose `removes` names a step that began (a step
        that never began made nothing)."""
        run = self.ctx.run(run_id)
        runbook = self.catalog.for_run(run)
        if not runbook.cleanup:
            return []
        began = {s.step_id for s in self.store.steps_for(run_id=run.id)}
        return [step.id for step in runbook.cleanup
                if any(target in began or self.ledger.began(run.id, target) for target in step.removes)]

    def conclude(self, run_id: str, *, trace: str = "") -> None:
        """The run's last word: what it made and whether that is gone (when it made anything), and for a drill the
        end of its incident. `trace`: the clean-up itself broke (logged with an error id; the report says so)."""
        run = self.ctx.run(run_id)
        if self.ledger.of_run(run.id) or trace:
            self._report_cleanup(run, trace)
        self.on_concluded(run)  # before the drill's incident ends: a scheduled drill's result is said first
        if run.drill:
            self.incidents.end_drill(run)

    def _report_cleanup(self, run: Run, trace: str) -> None:
        broke = ""
        if trace:
            error_id = faults.new_error_id()
            faults.log.error("error %s in the clean-up of %s:\n%s", error_id, run.id, trace)
            broke = f" The clean-up itself hit an internal error (error {error_id})."
        made = self.ledger.of_run(run.id)
        left = [e for e in made if e.get("gone_at") is None]
        lines = [f"• {e['kind']} `{e['name']}` ({e['provider']}): " + ("deleted" if e.get("gone_at") is not None
                 else "*still present* — delete it by hand; `drbot drills leaks` lists it") for e in made]
        head = (f"Clean-up of {run.id}: everything it made is gone." if not left else
                f"Clean-up of {run.id}: {len(left)} of {len(made)} resource(s) it made are still present.")
        self.ctx.emit(run, EventKind.RUN_CLEANUP, "\n".join([head + broke, *lines]), key=f"{run.id}:cleanup",
                      data={"resources": made, "left": len(left)})

    def _not_configured(self, run: Run, spec: StepSpec, attempt: int, why: str) -> str:
        """A step skipped because an optional setting is absent: on the timeline, so the export says what was
        not done (e.g. the restored data was not checked)."""
        now = self.clock.now()
        self.store.save_step(StepRun(run_id=run.id, step_id=spec.id, title=spec.title, attempt=attempt,
                                       status=StepStatus.SKIPPED, started_at=now, finished_at=now,
                                       error=f"not run: {why}"))
        self.ctx.emit(run, EventKind.STEP_SKIPPED, f"{spec.title}: not run — {why}", key=f"{run.id}:{spec.id}:skipped",
                   data={"step_id": spec.id, "reason": "not_configured", "why": why})
        return StepStatus.SKIPPED.value

    def _record_facts(self, run: Run, spec: StepSpec, outputs: Mapping[str, Any]) -> None:
        for fact, output in spec.records.items():
            value = outputs.get(output)
            if value is None:
                continue
            if fact == "restore_point":
                self.ctx.emit(run, EventKind.RPO_RESTORE_POINT, f"Restore point recorded: {value}.",
                           key=f"{run.id}:{spec.id}:restore_point", data={"restore_point": str(value)})
            elif fact == "replica_lag_seconds":
                lag = float(value)
                self.ctx.emit(run, EventKind.RPO_REPLICA_LAG, f"Replica lag at promotion: {lag:g} s (this is the RPO).",
                           key=f"{run.id}:{spec.id}:replica_lag", data={"replica_lag_seconds": lag})


def _is_cleanup(runbook: Runbook, step_id: str) -> bool:
    """A clean-up step runs to its end even after a cancel (deleting what the run made is the point)."""
    return any(step.id == step_id for step in runbook.cleanup)


def _compare(actual: Any, op: str, expected: Any) -> bool:
    try:
        if op == "==":
            return bool(actual == expected)
        if op == "!=":
            return bool(actual != expected)
        if actual is None:
            return False
        if op == ">":
            return bool(actual > expected)
        if op == ">=":
            return bool(actual >= expected)
        if op == "<":
            return bool(actual < expected)
        if op == "<=":
            return bool(actual <= expected)
    except TypeError:
        return False
    return False
