"""Who may approve: Slack user ids and user-group ids, groups resolved at click time and cached for a minute."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import Any

GROUP_TTL = 60.0


class GroupResolver:
    """`usergroups.users.list` per group id in an environment's allowlist, cached for GROUP_TTL seconds."""

    def __init__(self, client: Any, *, ttl: float = GROUP_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    def members(self, group_id: str) -> tuple[str, ...]:
        now = self.clock()
        with self._lock:
            cached = self._cache.get(group_id)
            if cached is not None and now - cached[0] < self.ttl:
                return cached[1]
        response = self.client.usergroups_users_list(usergroup=group_id)
        users = tuple(str(u) for u in response.get("users", []))
        with self._lock:
            self._cache[group_id] = (now, users)
        return users

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
