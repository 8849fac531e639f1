"""The two-person rule as pure functions.

Nothing here reads a clock, a database or Slack: the engine passes `now`, the stored request and the votes
cast so far, and gets back either a refusal (`ApprovalRefused` with a machine-readable `reason`) or a status.
Keeping the rule pure is what lets it be tested exhaustively, and lets the engine call it again after a crash
with the same inputs and get the same answer.

An approval is bound to a *plan hash*, not to a run: if anything that would change what runs (a parameter, a
provider, the runbook version, the step order) changes, the hash changes and earlier approvals stop counting.

The surface never trusts what a button carries. It passes the request id it was given; the engine looks the
request up and hands us `None` when there is no such request, so a tampered id ends here as `unknown_request`.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from runbooks.errors import ApprovalRefused
from runbooks.models import Approval, ApprovalPolicy, ApprovalRequest, Decision, Plan

__all__ = [
    "ANYONE",
    "canonical_json",
    "check_vote",
    "describe",
    "expires_at",
    "is_approver",
    "plan_hash",
    "short_hash",
    "tally",
]

ANYONE = "*"
"""The allowlist of a decision in an environment that needs no approval (`approvals.required: 0`): anyone who may
run runbooks there — the requester included — may retry, skip or abort a failed step. drbot.yml cannot list it
(the config refuses `*`), so it never widens a real approval policy."""

PENDING = "pending"
GRANTED = "granted"
REJECTED = "rejected"
EXPIRED = "expired"
CANCELLED = "cancelled"

# --------------------------------------------------------------------------------------------- hashing


def canonical_json(value: Any) -> str:
    """One spelling per value, so that equal plans hash equally on every machine and Python version.

    Keys are sorted and must be strings (silently stringifying `1` would collide with `"1"`); datetimes must be
    timezone-aware and are written in UTC with `Z` (the same instant always reads the same); timedeltas are
    seconds; tuples, lists and sets become lists (sets sorted); enums become their value; pydantic models
    their field dict. NaN and infinities are refused because they have no JSON spelling.
    """
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):  # before str/int: `Decision` is also a str
        return _plain(value.value)
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return _iso_z(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        return int(seconds) if seconds.is_integer() else seconds
    if isinstance(value, BaseModel):
        return _plain(value.model_dump(mode="python"))
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"canonical_json needs string keys; got {type(key).__name__} key {key!r}")
            out[key] = _plain(item)
        return out
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, set | frozenset):
        items = [_plain(item) for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True, separators=(",", ":")))
    raise TypeError(f"canonical_json cannot encode {type(value).__name__}: {value!r}")


def _iso_z(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()} is ambiguous; use a timezone-aware UTC time")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def plan_hash(plan: Plan) -> str:
    """Hash only what decides what will run; titles and provider `details` are display and may be reworded
    without invalidating an approval."""
    material = {
        "runbook": plan.runbook,
        "runbook_version": plan.runbook_version,
        "environment": plan.environment,
        "steps": [
            {
                "id": step.id,
                "action": step.action,
                "provider": step.provider,
                "params": step.params,
                "guarded": step.guarded,
                "after": step.after,
                **({"skipped": step.skipped} if step.skipped else {}),
            }
            for step in plan.steps
        ],
    }
    return hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()


def short_hash(h: str) -> str:
    """Eight hex characters are enough for a person to compare two plans by eye."""
    return h[:8]


# --------------------------------------------------------------------------------------------- policy


def expires_at(*, requested_at: datetime, policy: ApprovalPolicy) -> datetime:
    """The deadline is fixed when the request is made, so a restart or a late click can never extend it."""
    _iso_z(requested_at)  # refuses naive times with a clear message
    return requested_at + policy.expire_after


def is_approver(
    actor: str,
    *,
    allowlist: Collection[str],
    groups: Mapping[str, Collection[str]] | None = None,
) -> bool:
    """Exact, case-sensitive match: Slack IDs are exact, and a loose match is a way in for a look-alike name.

    `groups` is resolved by the surface afresh at every click, so adding someone to a Slack user group counts at
    their next click and removing someone counts at once (bot/slack/identity.py).
    """
    if not actor:
        return False
    if actor in allowlist or ANYONE in allowlist:
        return True
    if groups:
        return any(actor in groups.get(entry, ()) for entry in allowlist)
    return False


# --------------------------------------------------------------------------------------------- votes


def check_vote(
    *,
    request: ApprovalRequest | None,
    request_id: str,
    votes: Sequence[Approval],
    actor: str,
    decision: Decision,
    plan_hash: str,
    now: datetime,
    groups: Mapping[str, Collection[str]] | None = None,
) -> None:
    """Refuse a vote that must not count; return quietly when it may be recorded.

    `plan_hash` is the hash of the run's *current* plan as the engine computes it, never a value from the
    button. The requester may reject their own request (that is how they cancel it); only approving is
    refused to them. The checks run in a fixed order so that the user is told the most fundamental problem.
    """
    if request is None or request.id != request_id:
        raise ApprovalRefused(
            f"There is no approval request {_safe_id(request_id)}. It may have been replaced by a newer one; "
            "use the buttons on the latest plan in the incident thread, or `/dr status` to see what is pending.",
            reason="unknown_request",
        )
    verb = decision.value
    subject = _subject(request)
    if request.status != PENDING:
        raise ApprovalRefused(
            f"Approval request {request.id} ({subject}) is already {request.status}; your {verb} was not "
            f"recorded. {_after_status(request.status)}",
            reason="not_pending",
        )
    if now >= request.expires_at:
        raise ApprovalRefused(
            f"Approval request {request.id} ({subject}) expired at {_when(request.expires_at, now)} "
            f"({_ago(now - request.expires_at)}); your {verb} was not recorded. {request.requested_by} must ask "
            "again by re-running the command.",
            reason="expired",
        )
    if plan_hash != request.plan_hash:
        raise ApprovalRefused(
            f"This approval was for plan {short_hash(request.plan_hash)}, the current plan is "
            f"{short_hash(plan_hash)}; review the new plan and vote on it instead. Your {verb} was not recorded.",
            reason="plan_changed",
        )
    requester_rejecting = actor == request.requested_by and decision is Decision.REJECT
    if actor == request.requested_by and decision is Decision.APPROVE:
        raise ApprovalRefused(
            f"{actor}, you requested {subject}, so you cannot approve it: the two-person rule needs someone "
            f"else. Ask {_approver_names(_others(request.approvers, actor), groups)} to approve, "
            "or press Reject to cancel it.",
            reason="self_approval",
        )
    if not requester_rejecting and not is_approver(actor, allowlist=request.approvers, groups=groups):
        if request.approvers:
            who = f"Approvers are {_approver_names(request.approvers, groups)}; ask one of them."
        else:
            who = "No approvers are configured; add them under this environment's `approvals.approvers` in drbot.yml."
        raise ApprovalRefused(
            f"{actor} is not an approver for {subject}, so the {verb} was not recorded. {who}",
            reason="not_approver",
        )
    earlier = [v for v in _current(request, votes) if v.actor == actor]
    if earlier:
        first = min(earlier, key=lambda v: v.at)
        status = describe(request=request, votes=votes, now=now)
        raise ApprovalRefused(
            f"{actor} already voted {first.decision.value} on {request.id} at {_when(first.at, now)}; the same "
            f"person counts once. Status: {status}. Ask another approver.",
            reason="duplicate",
        )


def tally(*, request: ApprovalRequest, votes: Sequence[Approval], now: datetime) -> str:
    """Where the request stands given the votes so far.

    Only votes for this request, on its plan hash, cast before the deadline count; approvals by the requester
    never count; the same person counts once. Any counted reject wins (one "no" stops a risky step). Group
    membership is checked in `check_vote` at click time, so votes reaching here are assumed to be from
    approvers. A request already decided (granted, rejected, expired, cancelled) keeps its status.
    """
    if request.status != PENDING:
        return request.status
    counted = _current(request, votes)
    if any(v.decision is Decision.REJECT for v in counted):
        return REJECTED
    if len(_approvers_so_far(request, counted)) >= request.required:
        return GRANTED
    if now >= request.expires_at:
        return EXPIRED
    return PENDING


def describe(*, request: ApprovalRequest, votes: Sequence[Approval], now: datetime) -> str:
    """One line for the thread, e.g. `1 of 2 approvals (bob); expires 10:42Z (in 23 min)`."""
    counted = _current(request, votes)
    names = _approvers_so_far(request, counted)
    progress = f"{len(names)} of {request.required} approval{'' if request.required == 1 else 's'}"
    if names:
        progress += f" ({', '.join(names)})"
    status = tally(request=request, votes=votes, now=now)
    if status == PENDING:
        return f"{progress}; expires {_when(request.expires_at, now)} ({_until(request.expires_at - now)})"
    if status == REJECTED:
        rejecters = _unique(v.actor for v in counted if v.decision is Decision.REJECT)
        by = f" by {', '.join(rejecters)}" if rejecters else ""
        return f"rejected{by}; {progress}"
    if status == GRANTED:
        return "granted: no approval required" if request.required == 0 else f"granted: {progress}"
    if status == EXPIRED:
        return f"expired at {_when(request.expires_at, now)} with {progress}"
    return f"{status}; {progress}"


def _current(request: ApprovalRequest, votes: Sequence[Approval]) -> list[Approval]:
    """Votes that count for this request: same id, same plan hash, cast before the deadline, oldest first."""
    return sorted(
        (
            v
            for v in votes
            if v.request_id == request.id and v.plan_hash == request.plan_hash and v.at < request.expires_at
        ),
        key=lambda v: v.at,
    )


def _approvers_so_far(request: ApprovalRequest, counted: Sequence[Approval]) -> list[str]:
    return _unique(v.actor for v in counted if v.decision is Decision.APPROVE and v.actor != request.requested_by)


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for name in names:
        seen.setdefault(name, None)
    return list(seen)


# --------------------------------------------------------------------------------------------- wording


_SAFE_ID = re.compile(r"[^A-Za-z0-9_.:-]")


def _safe_id(request_id: str) -> str:
    """Echo a tampered id only as harmless characters: no markup, no mentions, bounded length."""
    cleaned = _SAFE_ID.sub("?", request_id)[:40]
    return f"`{cleaned}`" if cleaned else "(empty id)"


def _subject(request: ApprovalRequest) -> str:
    if request.gate == "decision" and request.option:
        step = f" of step {request.step_id}" if request.step_id else ""
        return f"the {request.option} decision{step} in run {request.run_id}"
    return f"the plan of run {request.run_id}"


def _after_status(status: str) -> str:
    if status == GRANTED:
        return "It already has the approvals it needs and the run is proceeding."
    if status in {REJECTED, CANCELLED, EXPIRED}:
        return "If the action is still needed, the requester must run the command again."
    return "Use `/dr status` to see what is pending."


def _others(allowlist: Collection[str], actor: str) -> list[str]:
    return [entry for entry in allowlist if entry != actor]


def _approver_names(allowlist: Collection[str], groups: Mapping[str, Collection[str]] | None) -> str:
    if not allowlist:
        return "an approver"
    if ANYONE in allowlist:
        return "anyone"
    names = [f"{entry} (group)" if groups and entry in groups else entry for entry in allowlist]
    return ", ".join(names)


def _when(moment: datetime, now: datetime) -> str:
    """`10:42Z` today, with the date otherwise, so that a 3 a.m. reader never mistakes yesterday for today."""
    moment, today = moment.astimezone(UTC), now.astimezone(UTC)
    if moment.date() == today.date():
        return moment.strftime("%H:%MZ")
    return moment.strftime("%Y-%m-%d %H:%MZ")


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 1:
        return "under 1 min"
    hours, minutes = divmod(minutes, 60)
    if hours == 0:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _until(delta: timedelta) -> str:
    return f"in {_span(delta)}"


def _ago(delta: timedelta) -> str:
    return "just now" if delta < timedelta(minutes=1) else f"{_span(delta)} ago"
