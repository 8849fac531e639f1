"""What each durable step of a run does: plan and pre-flight, approvals, start, wait, verify, finish.

These are plain methods; `runbooks.workflows` wraps each in a DBOS step so it is checkpointed. Every method is
safe to run twice (DBOS steps are at-least-once): events carry dedupe keys, requests are keyed, provider starts
are idempotent, and the store updates are overwrites.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from runbooks import approvals as rule
from runbooks import faults, planning, readiness
from runbooks.errors import DrbotError, PermanentError, PreflightFailed, ProviderError, TransientError
from runbooks.faults import Fault
from runbooks.models import Event, Plan, Run, RunStatus, StepRun, StepSpec, StepStatus
from runbooks.ports import Operation, OperationStatus, Provider
from runbooks.redact import redact, redact_text
from runbooks.timeline import format_duration, iso

if TYPE_CHECKING:
    from runbooks.engine import Engine

log = logging.getLogger("drbot.engine")

TRANSIENT_ATTEMPTS = 5


class Execution:
    """The step bodies of a run, bound to one engine."""

    def __init__(self, engine: Engine) -> None:
        self.e = engine

    # ------------------------------------------------------------------------------------------------ helpers

    def _run(self, run_id: str) -> Run:
        run = self.e.store.get_run(run_id)
        if run is None:
            raise DrbotError(f"run {run_id} vanished from the store")
        return run

    def _emit(self, run: Run, kind: str, text: str, *, key: str | None, actor: str = "drbot",
              data: Mapping[str, Any] | None = None) -> None:
        self.e.emit(Event(incident_id=run.incident_id, run_id=run.id, at=self.e.clock.now(), actor=actor, kind=kind,
                          text=text, data=dict(data or {})), dedupe_key=key)

    def provider_for(self, run: Run, step: StepSpec) -> Provider:
        resource = planning.resource_of(step)
        env = self.e.environment(run.environment)
        return self.e.providers(environment=env.name, resource=resource,
                                config=env.resources[resource].model_dump())

    def _fault(self, exc: Exception, *, where: str, run_id: str) -> Fault:
        return self.e.settler.fault(exc, where=where, run_id=run_id)

    def settle(self, run_id: str, *, cause: str, error_id: str = "") -> str:
        return self.e.settler.settle(run_id, cause=cause, error_id=error_id)

    def _with_retries(self, what: str, call: Any) -> Any:
        """Retry transient provider errors with capped exponential backoff; let the rest through."""
        delay = self.e.poll.initial
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                return call()
            except TransientError as exc:
                if attempt == TRANSIENT_ATTEMPTS:
                    raise PermanentError(f"{exc.message} (still failing after {attempt} attempts)",
                                         provider=exc.provider, code=exc.code) from exc
                log.warning("%s: transient error, retrying in %.2fs: %s", what, delay, exc.message)
                self.e.clock.sleep(delay)
                delay = min(delay * self.e.poll.factor, self.e.poll.maximum)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------------------------------------ plan

    def preflight(self, run_id: str) -> dict[str, Any]:
        """Resolve the plan, ask each provider for its details and read-only checks, hash the plan. Whatever is
        raised here ends the run `failed`: nothing has been changed yet, so there is nothing to decide."""
        try:
            return self._preflight(run_id)
        except Exception as exc:
            fault = self._fault(exc, where=f"{run_id} pre-flight", run_id=run_id)
            self.settle(run_id, cause=f"it could not be planned: {fault.message}", error_id=fault.error_id)
            return {"ok": False, "needs_approval": False}

    def _preflight(self, run_id: str) -> dict[str, Any]:
        run = self._run(run_id)
        if run.status.finished:  # cancelled (or settled) before its workflow got here: nothing to plan
            return {"ok": False, "needs_approval": False}
        runbook = self.e.catalog.get(run.runbook)
        env = self.e.environment(run.environment)
        skipped = readiness.skipped_steps(runbook, env)
        plan = planning.build_plan(run=run, runbook=runbook, environment=env, skipped=skipped)
        details: dict[str, dict[str, Any]] = {}
        problems: list[str] = []
        for step, planned in zip(runbook.steps, plan.steps, strict=True):
            if planned.skipped or planned.provider == planning.BUILTIN or planning.has_pending(planned.params):
                continue
            provider = self.provider_for(run, step)
            action = planning.action_of(step)
            try:
                details[step.id] = self._with_retries(
                    f"{run.id}/{step.id} plan",
                    lambda p=provider, a=action, s=planned: p.plan(action=a, params=s.params))
                found = self._with_retries(
                    f"{run.id}/{step.id} preflight",
                    lambda p=provider, a=action, s=planned: p.preflight(action=a, params=s.params))
            except ProviderError as exc:
                found = [exc.message]
            problems.extend(f"{step.title}: {p}" for p in found)
        plan = planning.build_plan(run=run, runbook=runbook, environment=env, details=details, skipped=skipped)
        plan_hash = rule.plan_hash(plan)
        policy = env.approvals
        needs_approval = policy.required > 0 and any(s.guarded and not s.skipped for s in plan.steps)
        shown = Plan.model_validate(redact(plan.model_dump(mode="json")))
        self.e.store.update_run(run.id, plan=shown, plan_hash=plan_hash)
        self._emit(run, "run.planned", f"Plan for {run.id} ({runbook.title}) on {env.name}, "
                   f"plan {rule.short_hash(plan_hash)}", key=f"{run.id}:planned",
                   data={"plan": shown.model_dump(mode="json"), "plan_hash": plan_hash})
        if problems:
            reason = "; ".join(problems)
            self.e.store.update_run(run.id, status=RunStatus.FAILED, reason=f"pre-flight failed: {reason}",
                                    finished_at=self.e.clock.now())
            self._emit(run, "run.preflight_failed", f"Pre-flight failed for {run.id}; nothing was changed. "
                       + " ".join(f"• {p}" for p in problems), key=f"{run.id}:preflight",
                       data={"problems": problems, "tell": run.requested_by})
            return {"ok": False, "needs_approval": False}
        self._emit(run, "run.preflight_ok", f"Pre-flight passed for {run.id}.", key=f"{run.id}:preflight")
        status = RunStatus.AWAITING_APPROVAL if needs_approval else RunStatus.RUNNING
        self.e.store.update_run(run.id, status=status)
        return {"ok": True, "needs_approval": needs_approval}

    def structure(self, run_id: str) -> list[list[str]]:
        run = self._run(run_id)
        return [[s.id for s in wave] for wave in planning.waves(self.e.catalog.get(run.runbook))]

    # ------------------------------------------------------------------------------------------------ approvals

    def open_request(self, run_id: str, gate: str, step_id: str, attempt: int) -> list[str]:
        """Create the approval request(s) of a gate; idempotent. Returns their ids.

        gate "plan": one request to run the plan. gate "decision": one request per option (retry, skip, abort)
        after a step failed; the first one granted decides.
        """
        run = self._run(run_id)
        env = self.e.environment(run.environment)
        policy = env.approvals
        now = self.e.clock.now()
        expires = rule.expires_at(requested_at=now, policy=policy)
        ids: list[str] = []
        if gate == "plan":
            req = self.e.store.create_request(
                run_id=run.id, gate="plan", option="", step_id="", plan_hash=run.plan_hash,
                requested_by=run.requested_by, requested_at=now, expires_at=expires, required=policy.required,
                approvers=policy.approvers, dedupe_key=f"{run.id}:plan")
            ids.append(req.id)
            self._emit(run, "approval.requested",
                       f"{run.requested_by} asks to run {run.runbook} on {env.name} ({run.id}), plan "
                       f"{rule.short_hash(run.plan_hash)}. Needs {policy.required} approval(s) from "
                       f"{' or '.join(a for a in policy.approvers if a != run.requested_by) or 'nobody'} "
                       f"(not {run.requested_by}); expires {iso(expires)}.",
                       key=f"{run.id}:plan:requested", actor=run.requested_by,
                       data={"request_id": req.id, "plan_hash": run.plan_hash, "gate": "plan",
                             "expires_at": iso(expires), "required": policy.required})
        else:
            # With no approval policy (staging) any one person decides; otherwise the two-person rule holds.
            required = max(policy.required, 1)
            requester = run.requested_by if policy.required > 0 else "drbot"
            for option in ("retry", "skip", "abort"):
                decision_hash = rule.plan_hash(run.plan) if run.plan else run.plan_hash
                req = self.e.store.create_request(
                    run_id=run.id, gate="decision", option=option, step_id=step_id,
                    plan_hash=f"{decision_hash[:48]}{option[:1]}{attempt:015d}", requested_by=requester,
                    requested_at=now, expires_at=now + timedelta(days=7), required=required,
                    approvers=policy.approvers if policy.required > 0 else (rule.ANYONE,),
                    dedupe_key=f"{run.id}:{step_id}:{attempt}:{option}")
                ids.append(req.id)
            self.e.store.update_run(run.id, status=RunStatus.PAUSED)
            step = next((s for s in self.e.store.steps_for(run_id=run.id) if s.step_id == step_id), None)
            self._emit(run, "run.paused",
                       f"{run.id} paused: step {step_id} failed ({step.error if step else 'unknown error'}). "
                       f"Choose retry, skip or abort"
                       + (f" (needs {required} approver other than {run.requested_by})" if policy.required else ""),
                       key=f"{run.id}:{step_id}:{attempt}:paused",
                       data={"requests": dict(zip(("retry", "skip", "abort"), ids, strict=True)), "step_id": step_id,
                             "attempt": attempt})
        return ids

    def evaluate(self, run_id: str, request_ids: list[str]) -> dict[str, Any]:
        """Where the gate stands now: decided (and how), cancelled, or pending with seconds left."""
        run = self._run(run_id)
        now = self.e.clock.now()
        cancelled_by = self.e.store.cancel_requested(run.id)
        remaining = 0.0
        pending: list[str] = []
        outcomes: dict[str, str] = {}
        for rid in request_ids:
            req = self.e.store.get_request(rid)
            if req is None:
                continue
            votes = self.e.store.votes(request_id=rid)
            status = rule.tally(request=req, votes=votes, now=now)
            outcomes[rid] = status
            if status == "pending":
                pending.append(rid)
                remaining = max(remaining, (req.expires_at - now).total_seconds())
        if cancelled_by is not None:
            for rid in pending:
                self.e.store.set_request_status(rid, status="cancelled")
            return {"decided": True, "status": "cancelled", "request": "", "by": cancelled_by}
        for rid, status in outcomes.items():
            if status == "granted":
                return self._decide(run, rid, "granted", request_ids)
        for rid, status in outcomes.items():
            if status == "rejected" and len(request_ids) == 1:
                return self._decide(run, rid, "rejected", request_ids)
        if not pending:
            status = "expired" if any(s == "expired" for s in outcomes.values()) else "rejected"
            return self._decide(run, request_ids[0], status, request_ids)
        return {"decided": False, "remaining": max(remaining, 0.0)}

    def _decide(self, run: Run, rid: str, status: str, all_ids: list[str]) -> dict[str, Any]:
        req = self.e.store.get_request(rid)
        assert req is not None
        votes = self.e.store.votes(request_id=rid)
        for other in all_ids:
            other_req = self.e.store.get_request(other)
            if other_req is not None and other_req.status == "pending":
                self.e.store.set_request_status(other, status=status if other == rid else "cancelled")
        who = ", ".join(v.actor for v in votes if v.decision.value == ("approve" if status == "granted" else "reject"))
        if req.gate == "plan":
            text = {"granted": f"Plan {rule.short_hash(req.plan_hash)} approved by {who}; {run.id} starts.",
                    "rejected": f"{run.id} rejected by {who}; nothing was changed.",
                    "expired": f"The approval request for {run.id} expired at {iso(req.expires_at)} with no decision; "
                               f"nothing was changed. Run the command again to ask anew."}[status]
        else:
            text = (f"Decision for {run.id}: {req.option} step {req.step_id} (by {who})." if status == "granted"
                    else f"Decision request for {run.id} ended: {status}.")
        self._emit(run, f"approval.{status}", text, key=f"{rid}:{status}",
                   data={"request_id": rid, "option": req.option, "by": who})
        return {"decided": True, "status": status, "request": rid, "option": req.option}

    # ------------------------------------------------------------------------------------------------ run state

    def mark(self, run_id: str, status: str, reason: str) -> None:
        """Finish (or resume) the run with a status and its timeline line."""
        run = self._run(run_id)
        now = self.e.clock.now()
        state = RunStatus(status)
        if state.finished:
            self.e.store.update_run(run.id, status=state, reason=reason, finished_at=now)
        else:
            self.e.store.update_run(run.id, status=state)
        texts = {
            RunStatus.RUNNING: f"{run.id} running again: {reason}." if reason else f"{run.id} running.",
            RunStatus.SUCCEEDED: f"{run.id} ({run.runbook}) finished successfully.",
            RunStatus.FAILED: f"{run.id} ({run.runbook}) stopped: {reason}",
            RunStatus.REJECTED: f"{run.id} was rejected; nothing was changed.",
            RunStatus.EXPIRED: f"{run.id} expired waiting for approval; nothing was changed.",
            RunStatus.CANCELLED: f"{run.id} cancelled: {reason}",
        }
        # Every status line is stored once, even when a restart re-runs this step: a run resumes (`running`) once
        # per decision, so the reason names which (the workflow passes it), and the key carries it.
        key = f"{run.id}:status:{state.value}" + ("" if state.finished else f":{reason}")
        self._emit(run, f"run.{state.value}", texts.get(state, f"{run.id}: {state.value}"), key=key,
                   data={"reason": reason})
        if state is RunStatus.SUCCEEDED and self.e.catalog.get(run.runbook).recovery:
            self.e.mark_restored(incident_id=run.incident_id, actor="drbot",
                                 why=f"{run.runbook} ({run.id}) completed", dedupe=f"{run.id}:restored")

    def cancel_requested(self, run_id: str) -> str | None:
        return self.e.store.cancel_requested(run_id)

    def skip(self, run_id: str, step_id: str, attempt: int) -> None:
        run = self._run(run_id)
        spec = self._spec(run, step_id)
        now = self.e.clock.now()
        self.e.store.save_step(StepRun(run_id=run.id, step_id=step_id, title=spec.title, attempt=attempt,
                                       status=StepStatus.SKIPPED, finished_at=now))
        self._emit(run, "step.skipped", f"{spec.title}: skipped by decision.", key=f"{run.id}:{step_id}:skipped")

    # ------------------------------------------------------------------------------------------------ steps

    def _spec(self, run: Run, step_id: str) -> StepSpec:
        return next(s for s in self.e.catalog.get(run.runbook).steps if s.id == step_id)

    # Each step body below turns whatever it raises into the step's failure (with an error id), so the run pauses
    # for a person's retry / skip / abort exactly as for a provider's refusal: by then something may have changed.

    def begin(self, run_id: str, step_id: str, attempt: int) -> dict[str, Any]:
        """Render the step's parameters from the outputs so far and record its start."""
        try:
            return self._begin(run_id, step_id, attempt)
        except Exception as exc:
            fault = self._fault(exc, where=f"{run_id}/{step_id} begin", run_id=run_id)
            return {"ok": False, "error": fault.text, "params": {}, "builtin": False}

    def _begin(self, run_id: str, step_id: str, attempt: int) -> dict[str, Any]:
        run = self._run(run_id)
        spec = self._spec(run, step_id)
        planned = next((s for s in run.plan.steps if s.id == step_id), None) if run.plan else None
        if planned is not None and planned.skipped:
            return {"ok": True, "skipped": planned.skipped, "error": "", "params": {}, "builtin": False}
        done = {s.step_id: s.outputs for s in self.e.store.steps_for(run_id=run.id)
                if s.status is StepStatus.SUCCEEDED}
        runbook = self.e.catalog.get(run.runbook)
        env = self.e.environment(run.environment)
        ctx = planning.context(run=run, runbook=runbook, environment=env, outputs=done)
        now = self.e.clock.now()
        key = f"{run.id}:{step_id}:{attempt}:started"
        if not self.e.store.has_event(dedupe_key=key):
            self.e.store.save_step(StepRun(run_id=run.id, step_id=step_id, title=spec.title, attempt=attempt,
                                           status=StepStatus.RUNNING, started_at=now))
        again = f" (attempt {attempt})" if attempt > 1 else ""
        self._emit(run, "step.started", f"{spec.title}: started{again}.", key=key,
                   data={"step_id": step_id, "attempt": attempt, "action": spec.action})
        try:
            params = planning.render_params(spec, ctx)
        except DrbotError as exc:
            return {"ok": False, "error": faults.describe(exc, environment=env.name), "params": {}, "builtin": False}
        return {"ok": True, "error": "", "params": params,
                "builtin": planning.resource_of(spec) == planning.BUILTIN}

    def start(self, run_id: str, step_id: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._start(run_id, step_id, params)
        except ProviderError as exc:
            return {"ok": False, "error": exc.message}
        except Exception as exc:
            return {"ok": False, "error": self._fault(exc, where=f"{run_id}/{step_id} start", run_id=run_id).text}

    def _start(self, run_id: str, step_id: str, params: dict[str, Any]) -> dict[str, Any]:
        run = self._run(run_id)
        spec = self._spec(run, step_id)
        provider = self.provider_for(run, spec)
        action = planning.action_of(spec)
        if spec.guarded or planning.has_pending(self._planned_params(run, step_id)):
            problems = self._with_retries(f"{run.id}/{step_id} preflight",
                                          lambda: provider.preflight(action=action, params=params))
            if problems:
                raise PreflightFailed("; ".join(problems), provider=provider.kind)
        op: Operation = self._with_retries(f"{run.id}/{step_id} start",
                                           lambda: provider.start(action=action, params=params, run_id=run.id))
        self._emit(run, "step.operation", f"{spec.title}: {provider.kind} {action} started"
                   + (f" on {op.target}" if op.target else "") + ".", key=f"{run.id}:{step_id}:op:{op.id}",
                   data={"operation": op.model_dump(mode="json"), "step_id": step_id})
        return {"ok": True, "op": op.model_dump(mode="json")}

    def _planned_params(self, run: Run, step_id: str) -> dict[str, Any]:
        if run.plan is None:
            return {}
        return next((s.params for s in run.plan.steps if s.id == step_id), {})

    def wait(self, run_id: str, step_id: str, op_data: dict[str, Any]) -> dict[str, Any]:
        """Poll with capped exponential backoff until done; re-attaches after a crash (the same operation)."""
        try:
            return self._wait(run_id, step_id, op_data)
        except ProviderError as exc:
            return {"ok": False, "error": exc.message, "outputs": {}}
        except Exception as exc:
            fault = self._fault(exc, where=f"{run_id}/{step_id} wait", run_id=run_id)
            return {"ok": False, "error": fault.text, "outputs": {}}

    def _wait(self, run_id: str, step_id: str, op_data: dict[str, Any]) -> dict[str, Any]:
        run = self._run(run_id)
        spec = self._spec(run, step_id)
        provider = self.provider_for(run, spec)
        op = Operation.model_validate(op_data)
        delay = self.e.poll.initial
        began = self.e.clock.now()
        last = ""
        while True:
            status: OperationStatus = self._with_retries(f"{run.id}/{step_id} poll",
                                                         lambda: provider.poll(operation=op))
            if status.status != last:
                last = status.status
                pct = f" ({status.progress:.0%})" if status.progress is not None and not status.done else ""
                self._emit(run, "step.progress", f"{spec.title}: {status.status}{pct}"
                           + (f" — {status.message}" if status.message and
                              not status.message.startswith(status.status) else ""),
                           key=f"{run.id}:{step_id}:{op.id}:{status.status}",
                           data={"step_id": step_id, "status": status.status, "progress": status.progress})
            if status.done:
                if status.failed:
                    return {"ok": False, "error": status.message or f"ended in status {status.status}",
                            "outputs": status.outputs}
                return {"ok": True, "error": "", "outputs": status.outputs}
            if self.e.store.cancel_requested(run.id):
                return {"ok": False, "cancelled": True, "error": "cancelled while waiting; the provider's "
                        f"operation {op.id} was not stopped and may still complete", "outputs": {}}
            self.e.clock.sleep(delay)
            delay = self.e.poll.next_delay(delay, waited=(self.e.clock.now() - began).total_seconds())

    def verify(self, run_id: str, step_id: str, params: dict[str, Any], outputs: dict[str, Any]) -> list[str]:
        run = self._run(run_id)
        spec = self._spec(run, step_id)
        problems: list[str] = []
        if planning.resource_of(spec) != planning.BUILTIN:
            try:
                provider = self.provider_for(run, spec)
                problems.extend(provider.verify(action=planning.action_of(spec), params=params, outputs=outputs))
            except ProviderError as exc:
                problems.append(exc.message)
            except Exception as exc:
                problems.append(self._fault(exc, where=f"{run_id}/{step_id} verify", run_id=run_id).text)
        for check in spec.verify:
            actual = outputs.get(check.output)
            if not _compare(actual, check.op, check.value):
                problems.append(check.message or f"{check.output} is {actual!r}, expected {check.op} {check.value!r}")
        return problems

    def builtin(self, run_id: str, step_id: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            run = self._run(run_id)
            spec = self._spec(run, step_id)
            name = planning.action_of(spec)
            text = str(params.get("text") or self.e.run_report(run.id)) if name == "report" \
                else str(params.get("text", ""))
            kind = {"notify": "run.notice", "report": "run.report", "record": "run.result"}[name]
            self._emit(run, kind, text, key=f"{run.id}:{step_id}:{kind}", data={"result": params.get("result")})
        except Exception as exc:
            return {"ok": False, "error": self._fault(exc, where=f"{run_id}/{step_id}", run_id=run_id).text,
                    "outputs": {}}
        return {"ok": True, "error": "", "outputs": {}}

    def finish(self, run_id: str, step_id: str, attempt: int, result: dict[str, Any]) -> str:
        """Record the step's end, its timeline facts, and whether service is now restored."""
        run = self._run(run_id)
        spec = self._spec(run, step_id)
        if result.get("skipped"):
            return self._not_configured(run, spec, attempt, str(result["skipped"]))
        steps = {s.step_id: s for s in self.e.store.steps_for(run_id=run.id)}
        started = steps[step_id].started_at if step_id in steps else None
        now = self.e.clock.now()
        outputs = dict(result.get("outputs") or {})
        if result.get("cancelled"):
            status = StepStatus.CANCELLED
        else:
            status = StepStatus.SUCCEEDED if result.get("ok") else StepStatus.FAILED
        error = redact_text(str(result.get("error") or ""))
        outputs = redact(outputs)
        self.e.store.save_step(StepRun(run_id=run.id, step_id=step_id, title=spec.title, attempt=attempt,
                                       status=status, started_at=started, finished_at=now, outputs=outputs,
                                       error=error))
        took = f" in {format_duration(now - started)}" if started else ""
        if status is StepStatus.SUCCEEDED:
            shown = ", ".join(f"{k}={v}" for k, v in outputs.items() if k in {"instance", "endpoint", "restore_time",
                              "replica_lag_seconds", "count", "points_count", "current", "restored", "phase"})
            self._emit(run, "step.completed", f"{spec.title}: done{took}" + (f" ({shown})" if shown else "") + ".",
                       key=f"{run.id}:{step_id}:{attempt}:completed",
                       data={"step_id": step_id, "attempt": attempt, "outputs": outputs})
            self._record_facts(run, spec, outputs)
            if spec.marks_restored:
                self.e.mark_restored(incident_id=run.incident_id, actor="drbot",
                                     why=f"{spec.title} completed ({run.id})", dedupe=f"{run.id}:restored")
        elif status is StepStatus.CANCELLED:
            self._emit(run, "step.cancelled", f"{spec.title}: {error}", key=f"{run.id}:{step_id}:{attempt}:cancelled")
        else:
            self._emit(run, "step.failed", f"{spec.title}: failed{took}: {error}",
                       key=f"{run.id}:{step_id}:{attempt}:failed",
                       data={"step_id": step_id, "attempt": attempt, "error": error})
        return status.value

    def _not_configured(self, run: Run, spec: StepSpec, attempt: int, why: str) -> str:
        """A step skipped because an optional setting is absent: on the timeline, so the export says what was
        not done (e.g. the restored data was not checked)."""
        now = self.e.clock.now()
        self.e.store.save_step(StepRun(run_id=run.id, step_id=spec.id, title=spec.title, attempt=attempt,
                                       status=StepStatus.SKIPPED, started_at=now, finished_at=now,
                                       error=f"not run: {why}"))
        self._emit(run, "step.skipped", f"{spec.title}: not run — {why}", key=f"{run.id}:{spec.id}:skipped",
                   data={"step_id": spec.id, "reason": "not_configured", "why": why})
        return StepStatus.SKIPPED.value

    def _record_facts(self, run: Run, spec: StepSpec, outputs: Mapping[str, Any]) -> None:
        for fact, output in spec.records.items():
            value = outputs.get(output)
            if value is None:
                continue
            if fact == "restore_point":
                self._emit(run, "rpo.restore_point", f"Restore point recorded: {value}.",
                           key=f"{run.id}:{spec.id}:restore_point", data={"restore_point": str(value)})
            elif fact == "replica_lag_seconds":
                lag = float(value)
                self._emit(run, "rpo.replica_lag", f"Replica lag at promotion: {lag:g} s (this is the RPO).",
                           key=f"{run.id}:{spec.id}:replica_lag", data={"replica_lag_seconds": lag})


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
