"""The two-person rule: every refusal, the tally, the plan hash and the wording people read at 3 a.m."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbooks.approvals import (
    canonical_json,
    check_vote,
    describe,
    expires_at,
    is_approver,
    plan_hash,
    short_hash,
    tally,
)
from runbooks.errors import ApprovalRefused, CommandError
from runbooks.models import Approval, ApprovalPolicy, ApprovalRequest, Decision, Plan, PlannedStep

T0 = datetime(2026, 11, 24, 10, 12, tzinfo=UTC)
DEADLINE = T0 + timedelta(minutes=30)  # 10:42Z
HASH = "a" * 8 + "0" * 56
OTHER_HASH = "d" * 8 + "1" * 56
APPROVERS = ("alice", "bob", "carol", "S0SRE")
GROUPS = {"S0SRE": ("dave", "erin")}


def make_request(**overrides: Any) -> ApprovalRequest:
    fields: dict[str, Any] = {
        "id": "AR-3",
        "run_id": "R-7",
        "gate": "plan",
        "plan_hash": HASH,
        "requested_by": "alice",
        "requested_at": T0,
        "expires_at": DEADLINE,
        "required": 1,
        "approvers": APPROVERS,
    }
    fields.update(overrides)
    return ApprovalRequest(**fields)


def vote(actor: str, decision: Decision = Decision.APPROVE, *, h: str = HASH, minute: int = 1,
         request_id: str = "AR-3") -> Approval:
    return Approval(request_id=request_id, actor=actor, decision=decision, plan_hash=h,
                    at=T0 + timedelta(minutes=minute))


def refuse(**overrides: Any) -> ApprovalRefused:
    """Run check_vote with sensible defaults and return the refusal it must raise."""
    kwargs: dict[str, Any] = {
        "request": make_request(),
        "request_id": "AR-3",
        "votes": [],
        "actor": "bob",
        "decision": Decision.APPROVE,
        "plan_hash": HASH,
        "now": T0 + timedelta(minutes=5),
        "groups": GROUPS,
    }
    kwargs.update(overrides)
    with pytest.raises(ApprovalRefused) as info:
        check_vote(**kwargs)
    return info.value


def accept(**overrides: Any) -> None:
    kwargs: dict[str, Any] = {
        "request": make_request(),
        "request_id": "AR-3",
        "votes": [],
        "actor": "bob",
        "decision": Decision.APPROVE,
        "plan_hash": HASH,
        "now": T0 + timedelta(minutes=5),
        "groups": GROUPS,
    }
    kwargs.update(overrides)
    check_vote(**kwargs)  # raises if refused


def step(**overrides: Any) -> PlannedStep:
    fields: dict[str, Any] = {
        "id": "restore",
        "title": "Restore rag-engine-prod to 10:00Z",
        "action": "database.restore_pitr",
        "provider": "aws-rds",
        "params": {"instance": "rag-engine-prod", "time": datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
                   "region": "us-west-2"},
        "guarded": True,
        "after": ("preflight",),
        "details": {"window": "09:00Z–10:11Z"},
    }
    fields.update(overrides)
    return PlannedStep(**fields)


def plan(*steps: PlannedStep, **overrides: Any) -> Plan:
    fields: dict[str, Any] = {"runbook": "database-pitr", "runbook_version": 2, "environment": "prod",
                              "steps": steps or (step(),)}
    fields.update(overrides)
    return Plan(**fields)


# --------------------------------------------------------------------------------------------- check_vote


def test_a_valid_approval_passes() -> None:
    accept()


def test_refusals_are_command_errors_so_surfaces_reply_with_them() -> None:
    assert isinstance(refuse(actor="alice"), CommandError)


def test_unknown_request_echoes_only_the_id() -> None:
    err = refuse(request=None, request_id="AR-99")
    assert err.reason == "unknown_request"
    assert "AR-99" in err.message
    assert "/dr status" in err.message


def test_tampered_request_id_is_sanitised_and_bounded() -> None:
    tampered = "AR-3<@U0ADMIN>|" + "x" * 200
    err = refuse(request=None, request_id=tampered)
    assert err.reason == "unknown_request"
    assert "<@" not in err.message and "|" not in err.message
    assert "x" * 41 not in err.message


def test_request_whose_id_differs_from_the_button_is_unknown() -> None:
    # The engine looked up one request but the button named another: never act on a mismatch.
    err = refuse(request=make_request(id="AR-4"), request_id="AR-3")
    assert err.reason == "unknown_request"
    assert "AR-3" in err.message


def test_empty_request_id_is_unknown() -> None:
    err = refuse(request=None, request_id="")
    assert err.reason == "unknown_request"
    assert "(empty id)" in err.message


@pytest.mark.parametrize("status", ["granted", "rejected", "expired", "cancelled"])
def test_not_pending_says_which(status: str) -> None:
    err = refuse(request=make_request(status=status))
    assert err.reason == "not_pending"
    assert f"already {status}" in err.message
    assert "AR-3" in err.message and "R-7" in err.message


def test_not_pending_granted_says_the_run_is_proceeding() -> None:
    assert "proceeding" in refuse(request=make_request(status="granted")).message


def test_not_pending_cancelled_says_to_run_the_command_again() -> None:
    assert "run the command again" in refuse(request=make_request(status="cancelled")).message


def test_expired_exactly_at_the_deadline() -> None:
    err = refuse(now=DEADLINE)
    assert err.reason == "expired"
    assert "expired at 10:42Z" in err.message
    assert "alice must ask again" in err.message


def test_one_microsecond_before_the_deadline_still_counts() -> None:
    accept(now=DEADLINE - timedelta(microseconds=1))


def test_expired_says_how_long_ago_and_the_date_when_not_today() -> None:
    err = refuse(now=DEADLINE + timedelta(days=1, minutes=5))
    assert err.reason == "expired"
    assert "expired at 2026-11-24 10:42Z" in err.message
    assert "ago" in err.message


def test_plan_changed_names_both_short_hashes() -> None:
    err = refuse(plan_hash=OTHER_HASH)
    assert err.reason == "plan_changed"
    assert "this approval was for plan aaaaaaaa, the current plan is dddddddd; review the new plan" in (
        err.message.lower()
    )


def test_self_approval_is_refused() -> None:
    err = refuse(actor="alice")
    assert err.reason == "self_approval"
    assert "alice" in err.message and "cannot approve" in err.message
    assert "bob" in err.message  # names who can approve instead
    assert "Reject to cancel" in err.message


def test_requester_may_reject_their_own_request() -> None:
    accept(actor="alice", decision=Decision.REJECT)


def test_requester_outside_the_allowlist_may_still_cancel() -> None:
    accept(request=make_request(requested_by="oncall"), actor="oncall", decision=Decision.REJECT)


def test_non_approver_is_refused_and_told_who_can_approve() -> None:
    err = refuse(actor="mallory")
    assert err.reason == "not_approver"
    assert "mallory is not an approver" in err.message
    assert "alice, bob, carol, S0SRE (group)" in err.message


def test_non_approver_cannot_reject_either() -> None:
    err = refuse(actor="mallory", decision=Decision.REJECT)
    assert err.reason == "not_approver"
    assert "reject" in err.message


def test_no_approvers_configured_points_at_the_config() -> None:
    err = refuse(request=make_request(approvers=()), actor="bob")
    assert err.reason == "not_approver"
    assert "approvals.approvers" in err.message and "drbot.yml" in err.message


def test_group_member_may_approve() -> None:
    accept(actor="dave")


def test_group_membership_is_resolved_from_groups_at_click_time() -> None:
    err = refuse(actor="dave", groups={"S0SRE": ("erin",)})
    assert err.reason == "not_approver"


def test_group_member_without_groups_mapping_is_not_an_approver() -> None:
    assert refuse(actor="dave", groups=None).reason == "not_approver"


def test_duplicate_vote_is_refused() -> None:
    err = refuse(actor="bob", votes=[vote("bob")], request=make_request(required=2))
    assert err.reason == "duplicate"
    assert "bob already voted approve on AR-3 at 10:13Z" in err.message
    assert "1 of 2 approvals (bob)" in err.message


def test_duplicate_applies_to_a_reject_after_an_approve() -> None:
    err = refuse(actor="bob", decision=Decision.REJECT, votes=[vote("bob")], request=make_request(required=2))
    assert err.reason == "duplicate"


def test_vote_on_another_request_is_not_a_duplicate() -> None:
    accept(votes=[vote("bob", request_id="AR-2")])


def test_stale_vote_on_an_old_plan_hash_is_not_a_duplicate() -> None:
    accept(votes=[vote("bob", h=OTHER_HASH)])


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        # Each case breaks every rule from its position on, so only the earliest may be reported.
        ({"request": None}, "unknown_request"),
        ({"request": make_request(status="granted"), "now": DEADLINE, "plan_hash": OTHER_HASH}, "not_pending"),
        ({"now": DEADLINE, "plan_hash": OTHER_HASH, "actor": "alice"}, "expired"),
        ({"plan_hash": OTHER_HASH, "actor": "alice"}, "plan_changed"),
        ({"actor": "alice", "request": make_request(approvers=("bob",)), "votes": [vote("alice")]},
         "self_approval"),
        ({"actor": "mallory", "votes": [vote("mallory")]}, "not_approver"),
    ],
)
def test_checks_run_in_the_documented_order(overrides: dict[str, Any], reason: str) -> None:
    assert refuse(**overrides).reason == reason


# --------------------------------------------------------------------------------------------- tally


def test_pending_until_enough_approvals() -> None:
    assert tally(request=make_request(), votes=[], now=T0) == "pending"


def test_one_approval_grants_required_one() -> None:
    assert tally(request=make_request(), votes=[vote("bob")], now=T0) == "granted"


def test_required_zero_is_granted_immediately() -> None:
    assert tally(request=make_request(required=0), votes=[], now=T0) == "granted"


def test_required_two_needs_two_distinct_others() -> None:
    request = make_request(required=2)
    assert tally(request=request, votes=[vote("bob"), vote("bob", minute=2)], now=T0) == "pending"
    assert tally(request=request, votes=[vote("bob"), vote("alice")], now=T0) == "pending"  # requester
    assert tally(request=request, votes=[vote("bob"), vote("carol")], now=T0) == "granted"


def test_reject_stops_it_even_after_an_approve() -> None:
    request = make_request(required=2)
    votes = [vote("bob"), vote("carol", Decision.REJECT, minute=2)]
    assert tally(request=request, votes=votes, now=T0) == "rejected"


def test_reject_wins_over_a_full_set_of_approvals() -> None:
    votes = [vote("bob"), vote("carol", Decision.REJECT)]
    assert tally(request=make_request(), votes=votes, now=T0) == "rejected"


def test_requester_reject_cancels() -> None:
    assert tally(request=make_request(), votes=[vote("alice", Decision.REJECT)], now=T0) == "rejected"


def test_approval_for_another_plan_hash_does_not_count() -> None:
    assert tally(request=make_request(), votes=[vote("bob", h=OTHER_HASH)], now=T0) == "pending"


def test_reject_for_another_plan_hash_does_not_count() -> None:
    votes = [vote("carol", Decision.REJECT, h=OTHER_HASH), vote("bob")]
    assert tally(request=make_request(), votes=votes, now=T0) == "granted"


def test_votes_for_another_request_do_not_count() -> None:
    assert tally(request=make_request(), votes=[vote("bob", request_id="AR-2")], now=T0) == "pending"


def test_expired_exactly_at_the_boundary() -> None:
    request = make_request()
    assert tally(request=request, votes=[], now=DEADLINE - timedelta(microseconds=1)) == "pending"
    assert tally(request=request, votes=[], now=DEADLINE) == "expired"


def test_granted_before_the_deadline_stays_granted_after_it() -> None:
    assert tally(request=make_request(), votes=[vote("bob")], now=DEADLINE + timedelta(hours=1)) == "granted"


def test_a_vote_cast_at_or_after_the_deadline_does_not_count() -> None:
    late = Approval(request_id="AR-3", actor="bob", decision=Decision.APPROVE, plan_hash=HASH, at=DEADLINE)
    assert tally(request=make_request(), votes=[late], now=DEADLINE) == "expired"


@pytest.mark.parametrize("status", ["granted", "rejected", "expired", "cancelled"])
def test_a_decided_request_keeps_its_status(status: str) -> None:
    assert tally(request=make_request(status=status), votes=[], now=T0) == status


actors = st.sampled_from(["alice", "bob", "carol", "dave", "erin"])
hashes = st.sampled_from([HASH, OTHER_HASH])
votes_strategy = st.lists(
    st.builds(
        Approval,
        request_id=st.sampled_from(["AR-3", "AR-2"]),
        actor=actors,
        decision=st.sampled_from(list(Decision)),
        plan_hash=hashes,
        at=st.integers(min_value=0, max_value=40).map(lambda m: T0 + timedelta(minutes=m)),
    ),
    max_size=12,
)


@settings(max_examples=400)
@given(votes=votes_strategy, required=st.integers(min_value=0, max_value=5), requester=actors,
       minutes=st.integers(min_value=0, max_value=60))
def test_granted_only_with_enough_distinct_non_requester_approvers_on_the_current_hash(
    votes: list[Approval], required: int, requester: str, minutes: int
) -> None:
    request = make_request(required=required, requested_by=requester)
    status = tally(request=request, votes=votes, now=T0 + timedelta(minutes=minutes))
    counted = [v for v in votes if v.request_id == "AR-3" and v.plan_hash == HASH and v.at < DEADLINE]
    approvers = {v.actor for v in counted if v.decision is Decision.APPROVE and v.actor != requester}
    rejected = any(v.decision is Decision.REJECT for v in counted)
    if status == "granted":
        assert len(approvers) >= required and not rejected
    if len(approvers) >= required and not rejected:
        assert status == "granted"
    if rejected:
        assert status == "rejected"
    assert status in {"pending", "granted", "rejected", "expired"}


# --------------------------------------------------------------------------------------------- describe


def test_describe_pending_matches_the_documented_form() -> None:
    text = describe(request=make_request(required=2), votes=[vote("bob")], now=T0 + timedelta(minutes=7))
    assert text == "1 of 2 approvals (bob); expires 10:42Z (in 23 min)"


def test_describe_counts_a_double_click_once_and_ignores_the_requester() -> None:
    votes = [vote("bob"), vote("bob", minute=2), vote("alice")]
    text = describe(request=make_request(required=2), votes=votes, now=T0)
    assert text.startswith("1 of 2 approvals (bob);")


def test_describe_hours_and_under_a_minute() -> None:
    request = make_request(expires_at=T0 + timedelta(hours=1, minutes=5))
    assert "(in 1 h 5 min)" in describe(request=request, votes=[], now=T0)
    assert "(in under 1 min)" in describe(request=request, votes=[], now=request.expires_at - timedelta(seconds=30))


def test_describe_rejected_names_who() -> None:
    votes = [vote("bob"), vote("carol", Decision.REJECT)]
    assert describe(request=make_request(required=2), votes=votes, now=T0).startswith("rejected by carol")


def test_describe_granted_and_required_zero() -> None:
    assert describe(request=make_request(), votes=[vote("bob")], now=T0) == "granted: 1 of 1 approval (bob)"
    assert describe(request=make_request(required=0), votes=[], now=T0) == "granted: no approval required"


def test_describe_expired() -> None:
    text = describe(request=make_request(required=2), votes=[vote("bob")], now=DEADLINE)
    assert text == "expired at 10:42Z with 1 of 2 approvals (bob)"


def test_describe_cancelled() -> None:
    assert describe(request=make_request(status="cancelled"), votes=[], now=T0).startswith("cancelled")


# --------------------------------------------------------------------------------------------- allowlist


def test_is_approver_by_name_and_by_group() -> None:
    assert is_approver("bob", allowlist=APPROVERS)
    assert is_approver("erin", allowlist=APPROVERS, groups=GROUPS)
    assert not is_approver("erin", allowlist=APPROVERS)
    assert not is_approver("mallory", allowlist=APPROVERS, groups=GROUPS)


def test_is_approver_is_exact() -> None:
    assert not is_approver("Bob", allowlist=APPROVERS)
    assert not is_approver("", allowlist=("",))


def test_a_group_not_in_the_allowlist_grants_nothing() -> None:
    assert not is_approver("zed", allowlist=APPROVERS, groups={"S0OTHER": ("zed",)})


# --------------------------------------------------------------------------------------------- expiry


def test_expires_at_adds_the_policy_window() -> None:
    assert expires_at(requested_at=T0, policy=ApprovalPolicy()) == T0 + timedelta(minutes=30)
    policy = ApprovalPolicy(expire_after=timedelta(minutes=5))
    assert expires_at(requested_at=T0, policy=policy) == T0 + timedelta(minutes=5)


def test_expires_at_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        expires_at(requested_at=datetime(2026, 11, 24, 10, 0), policy=ApprovalPolicy())


# --------------------------------------------------------------------------------------------- hashing


def test_canonical_json_spelling() -> None:
    value = {"b": (1, 2), "a": {"z": timedelta(minutes=30), "y": datetime(2026, 11, 24, 10, 0, tzinfo=UTC)}}
    assert canonical_json(value) == '{"a":{"y":"2026-11-24T10:00:00Z","z":1800},"b":[1,2]}'


def test_canonical_json_normalises_other_timezones_to_utc() -> None:
    plus_two = datetime(2026, 11, 24, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert canonical_json(plus_two) == '"2026-11-24T10:00:00Z"'


def test_canonical_json_fractional_seconds_and_enums_and_sets() -> None:
    assert canonical_json(timedelta(milliseconds=1500)) == "1.5"
    assert canonical_json(Decision.APPROVE) == '"approve"'
    assert canonical_json({"s": {"b", "a"}}) == '{"s":["a","b"]}'


def test_canonical_json_refuses_ambiguous_values() -> None:
    with pytest.raises(ValueError, match="naive"):
        canonical_json(datetime(2026, 11, 24, 10, 0))
    with pytest.raises(TypeError, match="string keys"):
        canonical_json({1: "a"})
    with pytest.raises(TypeError, match="cannot encode"):
        canonical_json(object())
    with pytest.raises(ValueError):
        canonical_json(float("nan"))


@given(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=8))
def test_canonical_json_ignores_insertion_order(d: dict[str, Any]) -> None:
    reversed_order = dict(reversed(list(d.items())))
    assert canonical_json(d) == canonical_json(reversed_order)
    assert json.loads(canonical_json(d)) == d


def test_plan_hash_is_sha256_hex_and_short_hash_is_eight() -> None:
    h = plan_hash(plan())
    assert len(h) == 64 and int(h, 16) >= 0
    assert short_hash(h) == h[:8]


def test_plan_hash_stable_across_dict_ordering() -> None:
    a = step(params={"instance": "rag-engine-prod", "region": "us-west-2"})
    b = step(params={"region": "us-west-2", "instance": "rag-engine-prod"})
    assert plan_hash(plan(a)) == plan_hash(plan(b))


def test_plan_hash_ignores_title_and_details() -> None:
    reworded = step(title="Restore the database", details={"window": "something else"})
    assert plan_hash(plan(reworded)) == plan_hash(plan())


def test_plan_hash_changes_with_another_restore_time() -> None:
    later = step(params={"instance": "rag-engine-prod", "time": datetime(2026, 11, 24, 10, 5, tzinfo=UTC),
                         "region": "us-west-2"})
    assert plan_hash(plan(later)) != plan_hash(plan())


@pytest.mark.parametrize(
    "changed",
    [
        plan(step(id="restore2")),
        plan(step(action="database.promote_replica")),
        plan(step(provider="sandbox")),
        plan(step(params={"instance": "rag-engine-prod", "region": "us-east-1",
                          "time": datetime(2026, 11, 24, 10, 0, tzinfo=UTC)})),
        plan(step(params={"instance": "rag-engine-prod", "region": "us-west-2",
                          "time": datetime(2026, 11, 24, 10, 0, tzinfo=UTC), "extra": True})),
        plan(step(guarded=False)),
        plan(step(after=())),
        plan(runbook="region-failover"),
        plan(runbook_version=3),
        plan(environment="staging"),
        plan(step(), step(id="verify", action="database.verify", guarded=False)),
    ],
)
def test_plan_hash_changes_with_anything_that_matters(changed: Plan) -> None:
    assert plan_hash(changed) != plan_hash(plan())


def test_plan_hash_depends_on_step_order() -> None:
    first, second = step(id="a"), step(id="b")
    assert plan_hash(plan(first, second)) != plan_hash(plan(second, first))


@given(st.dictionaries(st.sampled_from(["instance", "region", "time", "bucket", "prefix"]),
                       st.text(max_size=6), min_size=1))
def test_plan_hash_changes_when_any_single_param_changes(params: dict[str, str]) -> None:
    base = plan_hash(plan(step(params=params)))
    for key in params:
        changed = dict(params, **{key: params[key] + "x"})
        assert plan_hash(plan(step(params=changed))) != base
