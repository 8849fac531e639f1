"""Approval gates of a run, as durable step bodies: open the request(s) of a gate (the plan, or a failed step's
retry / skip / abort), see where they stand, and set the run's status with its timeline line.

The two-person rule itself is `runbooks.approvals` (pure); votes are recorded by `runbooks.votes`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from runbooks import approvals as rule
from runbooks.incidents import Incidents
from runbooks.models import Event, EventKind, Gate, Run, RunStatus
from runbooks.run_context import RunContext
from runbooks.step_results import GateState
from runbooks.timeline import iso

__all__ = ["Gates"]

Decided = Literal["granted", "rejected", "expired"]


class Gates:
    """`runbooks.workflows.GateSteps`."""

    def __init__(self, ctx: RunContext, *, incidents: Incidents) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.clock = ctx.clock
        self.settings = ctx.settings
        self.catalog = ctx.catalog
        self.incidents = incidents

    def open_request(self, run_id: str, gate: Gate, step_id: str, attempt: int) -> list[str]:
        """Create the approval request(s) of a gate; idempotent. Returns their ids.

        gate "plan": one request to run the plan. gate "decision": one request per option (retry, skip, abort)
        after a step failed; the first one granted decides.
        """
        run = self.ctx.run(run_id)
        env = self.settings.environment(run.environment)
        policy = self.settings.approvals(env, drill=run.drill)
        now = self.clock.now()
        expires = rule.expires_at(requested_at=now, policy=policy)
        ids: list[str] = []
        if gate == "plan":
            req = self.store.create_request(
                run_id=run.id, gate="plan", option="", step_id="", plan_hash=run.plan_hash,
                requested_by=run.requested_by, requested_at=now, expires_at=expires, required=policy.required,
                approvers=policy.approvers, dedupe_key=f"{run.id}:plan")
            ids.append(req.id)
            self.ctx.emit(run, EventKind.APPROVAL_REQUESTED,
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
                req = self.store.create_request(
                    run_id=run.id, gate="decision", option=option, step_id=step_id,
                    plan_hash=f"{decision_hash[:48]}{option[:1]}{attempt:015d}", requested_by=requester,
                    requested_at=now, expires_at=now + timedelta(days=7), required=required,
                    approvers=policy.approvers if policy.required > 0 else (rule.ANYONE,),
                    dedupe_key=f"{run.id}:{step_id}:{attempt}:{option}")
                ids.append(req.id)
            self.store.update_run(run.id, status=RunStatus.PAUSED)
            step = next((s for s in self.store.steps_for(run_id=run.id) if s.step_id == step_id), None)
            self.ctx.emit(run, EventKind.RUN_PAUSED,
                       f"{run.id} paused: step {step_id} failed ({step.error if step else 'unknown error'}). "
                       f"Choose retry, skip or abort"
                       + (f" (needs {required} approver other than {run.requested_by})" if policy.required else ""),
                       key=f"{run.id}:{step_id}:{attempt}:paused",
                       data={"requests": dict(zip(("retry", "skip", "abort"), ids, strict=True)), "step_id": step_id,
                             "attempt": attempt})
        return ids

    def evaluate(self, run_id: str, request_ids: list[str]) -> GateState:
        """Where the gate stands now: decided (and how), cancelled, or pending with seconds left."""
        run = self.ctx.run(run_id)
        now = self.clock.now()
        cancelled_by = self.store.cancel_requested(run.id)
        remaining = 0.0
        pending: list[str] = []
        outcomes: dict[str, str] = {}
        for rid in request_ids:
            req = self.store.get_request(rid)
            if req is None:
                continue
            votes = self.store.votes(request_id=rid)
            status = rule.tally(request=req, votes=votes, now=now)
            outcomes[rid] = status
            if status == "pending":
                pending.append(rid)
                remaining = max(remaining, (req.expires_at - now).total_seconds())
        if cancelled_by is not None:
            for rid in pending:
                self.store.set_request_status(rid, status="cancelled")
            return {"decided": True, "status": "cancelled", "request": "", "by": cancelled_by}
        for rid, status in outcomes.items():
            if status == "granted":
                return self._decide(run, rid, "granted", request_ids)
        for rid, status in outcomes.items():
            if status == "rejected" and len(request_ids) == 1:
                return self._decide(run, rid, "rejected", request_ids)
        if not pending:
            ended: Decided = "expired" if any(s == "expired" for s in outcomes.values()) else "rejected"
            return self._decide(run, request_ids[0], ended, request_ids)
        return {"decided": False, "remaining": max(remaining, 0.0)}

    def _decide(self, run: Run, rid: str, status: Decided, all_ids: list[str]) -> GateState:
        req = self.store.get_request(rid)
        assert req is not None
        votes = self.store.votes(request_id=rid)
        for other in all_ids:
            other_req = self.store.get_request(other)
            if other_req is not None and other_req.status == "pending":
                self.store.set_request_status(other, status=status if other == rid else "cancelled")
        who = ", ".join(v.actor for v in votes if v.decision.value == ("approve" if status == "granted" else "reject"))
        if req.gate == "plan":
            text = {"granted": f"Plan {rule.short_hash(req.plan_hash)} approved by {who}; {run.id} starts.",
                    "rejected": f"{run.id} rejected by {who}; nothing was changed.",
                    "expired": f"The approval request for {run.id} expired at {iso(req.expires_at)} with no decision; "
                               f"nothing was changed. Run the command again to ask anew."}[status]
        else:
            text = (f"Decision for {run.id}: {req.option} step {req.step_id} (by {who})." if status == "granted"
                    else f"Decision request for {run.id} ended: {status}.")
        self.ctx.emit(run, f"approval.{status}", text, key=f"{rid}:{status}",
                   data={"request_id": rid, "option": req.option, "by": who})
        return {"decided": True, "status": status, "request": rid, "option": req.option}

    def mark(self, run_id: str, status: str, reason: str) -> None:
        """Finish (or resume) the run with a status and its timeline line."""
        run = self.ctx.run(run_id)
        now = self.clock.now()
        state = RunStatus(status)
        fields: dict[str, Any] = {"status": state, "reason": reason, "finished_at": now} if state.finished \
            else {"status": state}
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
        # the status and its line in one transaction: whoever sees the run ended (the shell's and the tests' "settled")
        # finds the line that says so already stored and handed to the surfaces
        line = Event(incident_id=run.incident_id, run_id=run.id, at=now, actor="drbot", kind=f"run.{state.value}",
                     text=texts.get(state, f"{run.id}: {state.value}"), data={"reason": reason})
        self.ctx.events.record(line, write=lambda e: self.store.change_run(run.id, event=e, dedupe_key=key, **fields))
        if state is RunStatus.SUCCEEDED and self.catalog.for_run(run).recovery:
            self.incidents.mark_restored(incident_id=run.incident_id, actor="drbot",
                                 why=f"{run.runbook} ({run.id}) completed", dedupe=f"{run.id}:restored")

    def cancel_requested(self, run_id: str) -> str | None:
        return self.store.cancel_requested(run_id)
