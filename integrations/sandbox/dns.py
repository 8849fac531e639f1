"""Sandbox twin of a Route53 hosted zone: UPSERT a record to the DR target and follow the change from `PENDING`
to `INSYNC` (~60 s), and a health check that resolves the record the way a client would.

The record starts pointing at its primary value (`primary` in settings, else a TEST-NET address). Route53 returns
the new value from the API at once, but resolvers only see it once the change is `INSYNC`; the health check
models that, so a check run too early honestly reports the old value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from integrations.common import ActionImpl, Params
from integrations.sandbox.phases import stamp, status_at
from integrations.sandbox.records import Write, digest
from integrations.sandbox.world import SandboxProvider, refuse
from runbooks.actions import ACTIONS
from runbooks.ports import Operation

DNS_KIND = "sandbox.route53"
SYNC_SECONDS = ACTIONS["dns.switch"].typical  # real-world seconds, shared with plans' forecasts
DEFAULT_PRIMARY = {"A": "198.51.100.10", "AAAA": "2001:db8::10"}


class SandboxDns(SandboxProvider):
    resource = "dns"
    required_settings = {"record": "api.rag-engine.com"}

    def _actions_table(self) -> dict[str, ActionImpl]:
        return {
            "switch": ActionImpl(self._plan_switch, self._preflight_switch, self._start_switch),
            "health_check": ActionImpl(self._plan_health, self._preflight_health, self._start_health,
                                       verify=self._verify_health),
        }

    def _seed(self) -> None:
        record = self.settings.get("record")
        if self._load(DNS_KIND, str(record)) is None:
            rtype = str(self.settings.get("type", "A")).upper()
            value = str(self.settings.get("primary") or DEFAULT_PRIMARY.get(rtype, f"primary-lb.{record}"))
            self._save(DNS_KIND, str(record), {
                "record": str(record), "type": rtype, "zone_id": str(self.settings.get("zone_id", "ZSANDBOX")),
                "ttl": int(self.settings.get("ttl", 60)), "value": value, "previous": value,
                "phases": [["INSYNC", stamp(self.clock.now())]], "change": None})

    def _record(self, name: Any) -> dict[str, Any] | None:
        return self._load(DNS_KIND, str(name).rstrip("."))

    def _missing(self, name: Any) -> str:
        known = ", ".join(sorted(self.state.list_state(kind=DNS_KIND))) or "none"
        return (f"Record `{name}` does not exist in the sandbox hosted zone (records: {known}); check "
                f"{self.where}.record in drbot.yml.")

    def _resolved(self, record: Mapping[str, Any]) -> str:
        """What a resolver sees: the new value only once the change is INSYNC."""
        in_sync = status_at(record["phases"], self.clock.now()) == "INSYNC"
        return str(record["value"] if in_sync else record["previous"])

    # ---- switch

    def _plan_switch(self, params: Params) -> dict[str, Any]:
        record = self._record(params["record"])
        details: dict[str, Any] = {"record": params["record"], "type": params["type"], "target": params["target"],
                                   "ttl": params.get("ttl") or (record or {}).get("ttl", 60),
                                   "expected_duration": self._expected(SYNC_SECONDS)}
        if record is not None:
            details.update(current=record["value"], zone_id=params.get("zone_id") or record["zone_id"],
                           rollback=f"switch back to {record['value']} with the same action")
        return details

    def _preflight_switch(self, params: Params) -> list[str]:
        record = self._record(params["record"])
        if record is None:
            return [self._missing(params["record"])]
        problems: list[str] = []
        rtype = str(params["type"]).upper()
        if rtype != record["type"]:
            problems.append(f"Record `{record['record']}` is type {record['type']}, not {rtype}; use "
                            f"type: {record['type']}.")
        target = str(params["target"])
        if record["type"] in {"A", "AAAA"}:
            try:
                address = ipaddress.ip_address(target)
                if (address.version == 4) != (record["type"] == "A"):
                    raise ValueError(target)
            except ValueError:
                problems.append(f"Target {target!r} is not a valid {record['type']} address; give an IP such as "
                                f"{DEFAULT_PRIMARY[record['type']]}.")
        if target == record["value"]:
            problems.append(f"`{record['record']}` already points at {target}; nothing to switch (check "
                            f"{self.where}.dr_target).")
        return problems

    def _start_switch(self, params: Params, run_id: str) -> Operation:
        name = str(params["record"]).rstrip(".")
        record = self._record(name)
        if record is None:
            raise refuse(f"InvalidChangeBatch: {self._missing(name)}", code="InvalidChangeBatch")
        target = str(params["target"])
        if record["value"] == target and record.get("change"):
            attached = self._attach(str(record["change"]))
            if attached is not None:
                return attached
        problems = [p for p in self._preflight_switch(params) if "already points" not in p]
        if problems:
            raise refuse(f"InvalidChangeBatch: {problems[0]}", code="InvalidChangeBatch")
        timeline = self._timeline(SYNC_SECONDS, [("PENDING", 0.0), ("INSYNC", 1.0)])
        op_id = self._op_id("switch", name, run_id)
        change_id = f"/change/C{digest(op_id).upper()[:13]}"
        updated = {**record, "previous": record["value"], "value": target, "phases": timeline.phases,
                   "change": op_id, "ttl": int(params.get("ttl") or record["ttl"])}
        outputs = {"previous": record["value"], "current": target, "change_id": change_id}
        return self._begin(action="switch", target=name, run_id=run_id, timeline=timeline, outputs=outputs,
                           writes=[Write(DNS_KIND, name, updated)], inflight_key=target)

    # ---- health_check

    def _plan_health(self, params: Params) -> dict[str, Any]:
        record = self._record(params["record"])
        return {"record": params["record"], "expect": params.get("expect"),
                "resolves_to_now": self._resolved(record) if record else None}

    def _preflight_health(self, params: Params) -> list[str]:
        return [] if self._record(params["record"]) else [self._missing(params["record"])]

    def _start_health(self, params: Params, run_id: str) -> Operation:
        record = self._record(params["record"])
        value = self._resolved(record) if record else ""
        expect = params.get("expect")
        healthy = bool(value) and (expect is None or value == str(expect))
        return self._begin(action="health_check", target=str(params["record"]), run_id=run_id,
                           timeline=self._instant("healthy" if healthy else "unhealthy"),
                           outputs={"healthy": healthy, "value": value or None})

    def _verify_health(self, params: Params, outputs: Mapping[str, Any]) -> list[str]:
        if outputs.get("healthy"):
            return []
        value = outputs.get("value")
        if not value:
            return [f"`{params['record']}` does not resolve (NXDOMAIN); check the record in the hosted zone."]
        return [f"`{params['record']}` resolves to {value}, expected {params.get('expect')}; the change may not "
                "be in sync yet — re-run the health check in a minute."]
