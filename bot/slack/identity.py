"""Who may approve or cancel: Slack user ids and user-group ids, groups resolved fresh at every click.

A group's membership is read from Slack each time someone clicks Approve, Reject, Retry / Skip / Abort or
Cancel (or types `/dr cancel`), so adding someone to `@sre` counts at their next click and removing someone counts
at once. The clicks are handled after Slack's 3 s ack, so the extra call never delays an answer.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runbooks.engine import Engine


class GroupResolver:
    """`usergroups.users.list` for each group id (S…) in an environment's allowlist, asked anew every time."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def members(self, group_id: str) -> tuple[str, ...]:
        response = self.client.usergroups_users_list(usergroup=group_id)
        return tuple(str(u) for u in response.get("users", []))

    def groups_for(self, allowlist: Collection[str]) -> dict[str, tuple[str, ...]]:
        """Members of every group id (S…) in the allowlist. A group Slack cannot resolve counts as empty, so
        a broken group never lets anybody in."""
        groups: dict[str, tuple[str, ...]] = {}
        for entry in allowlist:
            if entry.startswith("S"):
                try:
                    groups[entry] = self.members(entry)
                except Exception:  # slack_sdk errors: refuse membership rather than guess
                    groups[entry] = ()
        return groups


def groups_for_run(engine: Engine, resolver: GroupResolver, run_id: str) -> dict[str, tuple[str, ...]]:
    """Members of the approver groups of the run's environment, asked of Slack now (removals count at once)."""
    run = engine.queries.get_run(run_id)
    if run is None:
        return {}
    env = engine.settings.environments.get(run.environment)
    return resolver.groups_for(engine.settings.approvals(env, drill=run.drill).approvers) if env else {}
