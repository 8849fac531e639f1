"""Sandbox twin of a Route53 hosted zone: UPSERT a record to the DR target and follow the change from `PENDING`
to `INSYNC` (~60 s), and a health check that resolves the record the way a client would.

The record starts pointing at its primary value (`primary` in settings, else a TEST-NET address). Route53 returns
the new value from the API at once, but resolvers only see it once the change is `INSYNC`; the health check
models that, so a check run too early honestly reports the old value.

`check_target` (read-only, a drill's stand-in for the switch) reports the DR target healthy and never touches the
record, unless the target is listed in the resource's `unhealthy_targets` setting (a list of targets, or one),
which makes its check fail the way Route53's would — e.g. `dns: {…, unhealthy_targets: ["203.0.113.20"]}` to
rehearse a drill whose DR target does not answer.
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
            "check_target": ActionImpl(self._plan_check, self._preflight_check, self._start_check,
                                       verify=self._verify_check),
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

    # ---- check_target (read-only: the DR target answers; the record is not touched)

    def _host(self, params: Params) -> str:
        target = params["target"]
        return str(target.get("dns_name")) if isinstance(target, Mapping) else str(target)

    def _unhealthy(self) -> set[str]:
        listed = self.settings.get("unhealthy_targets") or []
        return {str(listed)} if isinstance(listed, str) else {str(t) for t in listed}

    def _port_problem(self, params: Params) -> str:
        raw = params.get("port")
        if raw is None or raw == "":
            return ""
        try:
            port = int(raw)
        except (TypeError, ValueError):
            port = 0
        return "" if 0 < port < 65536 else (f"`port` must be a TCP port between 1 and 65535 (443 when left out); "
                                            f"got {raw!r}.")

    def _plan_check(self, params: Params) -> dict[str, Any]:
        host, check_id = self._host(params), params.get("health_check_id") or self.settings.get("dr_health_check_id")
        method = (f"sandbox health check `{check_id}`" if check_id
                  else f"TCP connect to {host}:{params.get('port') or 443} (simulated)")
        return {"target": host, "method": method, "changes": "nothing: the record is not read or changed"}

    def _preflight_check(self, params: Params) -> list[str]:
        problem = self._port_problem(params)
        return [problem] if problem else []

    def _start_check(self, params: Params, run_id: str) -> Operation:
        problem = self._port_problem(params)
        if problem:
            raise refuse(problem)
        host, port = self._host(params), int(params.get("port") or 443)
        check_id = params.get("health_check_id") or self.settings.get("dr_health_check_id")
        healthy = host not in self._unhealthy()
        listed = f"the sandbox lists it in {self.where}.unhealthy_targets"
        if check_id:
            detail = (f"The DR target {host} passes health check `{check_id}` (sandbox)." if healthy else
                      f"The DR target {host} fails health check `{check_id}`: no checker reports success ({listed}).")
        else:
            detail = (f"The DR target {host} accepts TCP connections on port {port} (sandbox)." if healthy else
                      f"The DR target {host} does not answer on TCP port {port}: the connection failed ({listed}).")
        return self._begin(action="check_target", target=host, run_id=run_id,
                           timeline=self._instant("healthy" if healthy else "unhealthy"),
                           outputs={"healthy": healthy, "detail": detail})

    def _verify_check(self, params: Params, outputs: Mapping[str, Any]) -> list[str]:
        if outputs.get("healthy"):
            return []
        return [str(outputs.get("detail") or f"The DR target {params.get('target')} does not answer.")]
