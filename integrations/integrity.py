"""`database.integrity_check` for the cloud database providers (aws-rds, cloudsql, azure-postgres).

Why a mixin over `CloudProvider`: the three providers differ only in where the restored instance listens (RDS's
`Endpoint`, Cloud SQL's primary IP, Azure's FQDN), so each supplies `_integrity_endpoint` and inherits the rest —
settings, preflight sentences, plan, the instant operation, the `min_count` verify and the `drbot check` probe —
so that the three read, and fail, alike. The SQL itself lives in `integrations.sql`.

The environment is handed in (`environ=`, from `bot.config.process_environment()` through wiring and the
provider's builder), like Kubernetes' `token_env` and Qdrant's `api_key_env`: nothing here reads `os.environ`,
so a provider built without it sees no variable at all and says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from integrations.common import ActionImpl, CloudProvider, Params
from integrations.sql import DEFAULT_PORT, IntegritySettings, count_rows, query_problem, shown
from runbooks.errors import PermanentError, ProviderError
from runbooks.ports import Operation

ACTION = "integrity_check"


class IntegrityActions(CloudProvider):
    """Adds `integrity_check`; a provider lists `self._integrity_impl()` in its `_actions_table`."""

    def __init__(self, *, environ: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        self._environ: dict[str, str] = dict(environ or {})
        super().__init__(**kwargs)

    # ---- to be provided by each cloud

    def _integrity_endpoint(self, instance: str) -> tuple[str, int] | None:
        """(host, port) the cloud API reports for the instance ("" host while it has none); None when missing."""
        raise NotImplementedError

    # ---- the action

    def _integrity_impl(self) -> ActionImpl:
        return ActionImpl(self._plan_integrity, self._preflight_integrity, self._start_integrity,
                          verify=self._verify_integrity)

    @property
    def _integrity_where(self) -> str:
        return f"{self.where}.integrity"

    def _integrity_settings(self) -> IntegritySettings:
        return IntegritySettings.parse(self.settings.get("integrity"), where=self._integrity_where,
                                       provider=self.kind)

    def _integrity_target(self, settings: IntegritySettings, instance: str) -> tuple[str, int, str]:
        """(host, port, where they came from): the override when configured, else the instance's endpoint."""
        if settings.host:
            return (settings.host, settings.port or DEFAULT_PORT,
                    f"{self._integrity_where}.host (a tunnel or proxy such as cloud-sql-proxy)")
        found = self._integrity_endpoint(instance)
        if found is None:
            raise PermanentError(f"Instance `{instance}` does not exist, so there is nothing to check; run the "
                                 "restore first, or check the step's `instance`.", provider=self.kind,
                                 code="InstanceNotFound")
        host, port = found
        if not host:
            raise PermanentError(f"`{instance}` has no endpoint yet; wait until the restore is available, or set "
                                 f"{self._integrity_where}.host to a tunnel or proxy.", provider=self.kind,
                                 code="NoEndpoint")
        return host, settings.port or port, f"the endpoint {self.kind} reports for `{instance}`"

    def _plan_integrity(self, params: Params) -> dict[str, Any]:
        instance, query = str(params["instance"]), str(params["query"])
        details: dict[str, Any] = {"instance": instance, "query": query,
                                   "read_only": "one SELECT inside a READ ONLY transaction, rolled back"}
        if params.get("min_count") is not None:
            details["min_count"] = params["min_count"]
        try:
            settings = self._integrity_settings()
            details["timeout_seconds"] = settings.timeout
            url = settings.url(self._environ, provider=self.kind)
            host, port, source = self._integrity_target(settings, instance)
        except ProviderError as exc:
            details["problem"] = exc.message
            return details
        details.update(host=host, port=port, host_source=source,
                       url=shown(url.set(host=host, port=port)))
        return details

    def _preflight_integrity(self, params: Params) -> list[str]:
        problems: list[str] = []
        try:
            settings = self._integrity_settings()
            settings.url(self._environ, provider=self.kind)
            if not settings.host:  # the endpoint must be readable now; an override is checked by connecting
                self._integrity_target(settings, str(params["instance"]))
        except ProviderError as exc:
            problems.append(exc.message)
        problem = query_problem(str(params["query"]))
        return problems + ([problem] if problem else [])

    def _start_integrity(self, params: Params, run_id: str) -> Operation:
        instance, query = str(params["instance"]), str(params["query"])
        problem = query_problem(query)
        if problem:
            raise PermanentError(problem, provider=self.kind, code="InvalidQuery")
        settings = self._integrity_settings()
        url = settings.url(self._environ, provider=self.kind)
        host, port, _ = self._integrity_target(settings, instance)
        count = count_rows(url=url.set(host=host, port=port), query=query, timeout=settings.timeout,
                           where=self._integrity_where, provider=self.kind)
        return self._instant(action=ACTION, target=instance, run_id=run_id, status="succeeded",
                             outputs={"count": count, "instance": instance, "host": host})

    def _verify_integrity(self, params: Params, outputs: Mapping[str, Any]) -> list[str]:
        """Only an explicit `min_count` is checked here; the catalog's own `verify:` rules speak for themselves."""
        if params.get("min_count") is None:
            return []
        minimum, count = float(params["min_count"]), float(outputs.get("count") or 0)
        if count >= minimum:
            return []
        return [f"Integrity check on `{params['instance']}` returned {count:,.0f}, below the minimum "
                f"{minimum:,.0f}; the restore may be missing data — compare with the source before switching "
                "traffic."]

    def _probe(self) -> list[str]:
        """The provider's own probe (the mixin comes first in the bases), then the integrity block's."""
        return super()._probe() + self._probe_integrity()

    def _probe_integrity(self) -> list[str]:
        """For `drbot check`: the block is well formed and its variable is set. Nothing connects."""
        if self.settings.get("integrity") is None:
            return []
        try:
            self._integrity_settings().url(self._environ, provider=self.kind)
        except ProviderError as exc:
            return [exc.message]
        return []
