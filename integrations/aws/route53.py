"""Amazon Route53 (`provider: route53`): switch a record to the DR target and follow the change to `INSYNC`, a
health check that reads the record back, and a read-only check that the DR target answers (a drill's stand-in for
the switch).

A target is a plain value (an IP for `A`/`AAAA`, a host name for `CNAME`) or, for an alias record, a mapping
`{hosted_zone_id, dns_name}` (or a host name with `settings.alias_hosted_zone_id`). The value the record had
before the switch is kept in the operation and, when a state store is given, across a crash — it is the
rollback and the thread shows it.

Idempotency: a record that already has the target is attached to (done, no change id), and this run's own
change is remembered, so a restarted `start` polls the same change instead of sending a second UPSERT.

`check_target` never touches the record: with a Route53 health check (the step's `health_check_id`, else
`dr_health_check_id` in the resource's settings) it reads `GetHealthCheckStatus` and calls the target healthy as
Route53 does, when more than 18% of the checkers report `Success`; without one it opens a TCP connection to the
target (port 443 unless the step gives `port`) with a short timeout. An unhealthy target is not an error: the step
finishes with `healthy: false` and its verification fails with a sentence naming the target and what failed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from typing import Any

from integrations.aws.base import AwsProvider, make_client
from integrations.aws.errors import aws_errors
from integrations.common import ActionImpl, Params
from runbooks.errors import PermanentError, ProviderError
from runbooks.ports import Operation, OperationStatus

Value = str | dict[str, str]

CONNECT_TIMEOUT = 3.0
"""Seconds `check_target` waits for a TCP connection to the DR target before calling it unhealthy."""
DEFAULT_PORT = 443
HEALTHY_SHARE = 0.18
"""Route53 considers an endpoint healthy when more than 18% of its health checkers report it healthy."""


def _name(record: Any) -> str:
    return str(record).rstrip(".").lower()


def rrset_value(rrset: Mapping[str, Any]) -> Value:
    """A record set's value as drbot shows it: the record values joined, or the alias target."""
    alias = rrset.get("AliasTarget")
    if alias:
        return {"hosted_zone_id": str(alias["HostedZoneId"]), "dns_name": _name(alias["DNSName"])}
    return ",".join(str(r["Value"]) for r in rrset.get("ResourceRecords") or [])


class AwsRoute53(AwsProvider):
    kind = "route53"
    resource = "dns"
    state_kind = "aws.route53"

    def _actions_table(self) -> dict[str, ActionImpl]:
        return {
            "switch": ActionImpl(self._plan_switch, self._preflight_switch, self._start_switch, self._poll_switch),
            "health_check": ActionImpl(self._plan_health, self._preflight_health, self._start_health,
                                       verify=self._verify_health),
            "check_target": ActionImpl(self._plan_check, self._preflight_check, self._start_check,
                                       verify=self._verify_check),
        }

    def _make_client(self) -> Any:
        return make_client("route53", settings=self.settings)

    # ---- reading

    def _zone(self, params: Params) -> str:
        return str(params.get("zone_id") or self._setting("zone_id", "Z0123456789ABC"))

    def _zone_problem(self, zone: str) -> str:
        try:
            with aws_errors(provider=self.kind, doing=f"reading hosted zone `{zone}`", subject=zone,
                            setting=f"{self.where}.zone_id", preflight=True):
                self.client.get_hosted_zone(Id=zone)
        except ProviderError as exc:
            if exc.code == "NoSuchHostedZone":
                return exc.message
            raise
        return ""

    def _rrset(self, zone: str, record: Any, rtype: str) -> dict[str, Any] | None:
        with aws_errors(provider=self.kind, doing=f"reading record `{record}` in zone `{zone}`", subject=zone,
                        setting=f"{self.where}.zone_id"):
            found = self.client.list_resource_record_sets(HostedZoneId=zone, StartRecordName=str(record),
                                                          StartRecordType=rtype, MaxItems="1")["ResourceRecordSets"]
        for rrset in found:
            if _name(rrset["Name"]) == _name(record) and rrset["Type"] == rtype:
                return dict(rrset)
        return None

    def _probe(self) -> list[str]:
        zone = self._setting("zone_id", "Z0123456789ABC")
        problem = self._zone_problem(zone)
        if problem:
            return [problem]
        record, rtype = self._setting("record", "api.example.com"), self._type({})
        return [] if self._rrset(zone, record, rtype) is not None else [self._missing(record, rtype, zone)]

    def _type(self, params: Params) -> str:
        return str(params.get("type") or self.settings.get("type") or "A").upper()

    def _target(self, params: Params) -> Value:
        raw = params["target"]
        if isinstance(raw, Mapping):
            return {"hosted_zone_id": str(raw["hosted_zone_id"]), "dns_name": _name(raw["dns_name"])}
        if self.settings.get("alias_hosted_zone_id"):
            return {"hosted_zone_id": str(self.settings["alias_hosted_zone_id"]), "dns_name": _name(raw)}
        return str(raw)

    def _missing(self, record: Any, rtype: str, zone: str) -> str:
        return (f"Record `{record}` ({rtype}) does not exist in hosted zone `{zone}`; check {self.where}.record "
                "and type in drbot.yml.")

    # ---- switch

    def _plan_switch(self, params: Params) -> dict[str, Any]:
        zone, rtype = self._zone(params), self._type(params)
        details: dict[str, Any] = {"record": params["record"], "type": rtype, "target": self._target(params),
                                   "zone_id": zone}
        rrset = self._rrset(zone, params["record"], rtype)
        if rrset is None:
            details["problem"] = self._missing(params["record"], rtype, zone)
            return details
        current = rrset_value(rrset)
        details.update(current=current, ttl=params.get("ttl") or rrset.get("TTL"),
                       rollback=f"switch back to {current} with the same action")
        return details

    def _preflight_switch(self, params: Params) -> list[str]:
        zone, rtype = self._zone(params), self._type(params)
        problem = self._zone_problem(zone)
        if problem:
            return [problem]
        rrset = self._rrset(zone, params["record"], rtype)
        if rrset is None:
            return [self._missing(params["record"], rtype, zone)]
        problems = self._target_problems(params, rtype, rrset)
        if rrset_value(rrset) == self._target(params):
            problems.append(f"`{_name(params['record'])}` already points at {self._target(params)}; nothing to "
                            f"switch (check {self.where}.dr_target).")
        return problems

    def _target_problems(self, params: Params, rtype: str, rrset: Mapping[str, Any]) -> list[str]:
        target = self._target(params)
        if isinstance(target, dict) or rtype not in {"A", "AAAA"} or rrset.get("AliasTarget"):
            return []
        try:
            address = ipaddress.ip_address(target)
            if (address.version == 4) != (rtype == "A"):
                raise ValueError(target)
        except ValueError:
            example = "203.0.113.10" if rtype == "A" else "2001:db8::10"
            return [f"Target {target!r} is not a valid {rtype} address; give an IP such as {example}."]
        return []

    def _start_switch(self, params: Params, run_id: str) -> Operation:
        zone, rtype, record = self._zone(params), self._type(params), _name(params["record"])
        target = self._target(params)
        key = f"switch:{zone}:{record}:{rtype}:{run_id}"
        remembered = self._recall(key) or {}
        if remembered.get("change_id"):  # this run already sent the UPSERT: follow the same change
            return self._handle(remembered, record=record)
        rrset = self._rrset(zone, record, rtype)
        if rrset is None:
            raise PermanentError(f"InvalidChangeBatch: {self._missing(record, rtype, zone)}", provider=self.kind,
                                 code="InvalidChangeBatch")
        current = rrset_value(rrset)
        if current == target:  # already there (a retry after the change, or nothing to do): attach
            facts = {"previous": remembered.get("previous", current), "current": current, "change_id": ""}
            return self._handle(facts, record=record)
        problems = self._target_problems(params, rtype, rrset)
        if problems:
            raise PermanentError(f"InvalidChangeBatch: {problems[0]}", provider=self.kind, code="InvalidChangeBatch")
        facts = {"previous": current, "current": target, "change_id": ""}
        self._remember(key, facts)
        ttl = int(params.get("ttl") or rrset.get("TTL") or self.settings.get("ttl") or 60)
        new: dict[str, Any] = {"Name": record, "Type": rtype}
        if isinstance(target, dict):
            new["AliasTarget"] = {"HostedZoneId": target["hosted_zone_id"], "DNSName": target["dns_name"],
                                  "EvaluateTargetHealth": bool(self.settings.get("evaluate_target_health", False))}
        else:
            new.update(TTL=ttl, ResourceRecords=[{"Value": target}])
        with aws_errors(provider=self.kind, doing=f"switching `{record}` to {target}", subject=zone,
                        setting=f"{self.where}.zone_id"):
            change = self.client.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={
                "Comment": f"drbot {run_id}: DR switch of {record}",
                "Changes": [{"Action": "UPSERT", "ResourceRecordSet": new}]})["ChangeInfo"]
        facts["change_id"] = str(change["Id"])
        self._remember(key, facts)
        return self._handle(facts, record=record)

    def _handle(self, facts: Mapping[str, Any], *, record: str) -> Operation:
        change_id = str(facts.get("change_id") or "")
        return Operation(provider=self.kind, action="switch", id=change_id or f"nochange:{record}", target=record,
                         data={"previous": facts["previous"], "current": facts["current"], "change_id": change_id})

    def _poll_switch(self, operation: Operation) -> OperationStatus:
        change_id = str(operation.data.get("change_id") or "")
        outputs = {"previous": operation.data["previous"], "current": operation.data["current"],
                   "change_id": change_id or None}
        if not change_id:
            return OperationStatus(done=True, status="INSYNC", progress=1.0, outputs=outputs,
                                   message="The record already had the target value; no change was sent.")
        with aws_errors(provider=self.kind, doing=f"reading change `{change_id}`"):
            status = str(self.client.get_change(Id=change_id)["ChangeInfo"]["Status"])
        done = status == "INSYNC"
        return OperationStatus(done=done, status=status, progress=1.0 if done else None,
                               outputs=outputs if done else {})

    # ---- health_check

    def _plan_health(self, params: Params) -> dict[str, Any]:
        return {"record": params["record"], "expect": params.get("expect"), "zone_id": self._zone(params)}

    def _preflight_health(self, params: Params) -> list[str]:
        zone, rtype = self._zone(params), self._type(params)
        problem = self._zone_problem(zone)
        if problem:
            return [problem]
        return [] if self._rrset(zone, params["record"], rtype) else [self._missing(params["record"], rtype, zone)]

    def _start_health(self, params: Params, run_id: str) -> Operation:
        zone, rtype = self._zone(params), self._type(params)
        rrset = self._rrset(zone, params["record"], rtype)
        value = rrset_value(rrset) if rrset else None
        expect = params.get("expect")
        wanted = self._target({"target": expect}) if expect is not None else None
        healthy = bool(value) and (wanted is None or value == wanted)
        return self._instant(action="health_check", target=_name(params["record"]), run_id=run_id,
                             status="healthy" if healthy else "unhealthy",
                             outputs={"healthy": healthy, "value": value or None})

    def _verify_health(self, params: Params, outputs: Mapping[str, Any]) -> list[str]:
        if outputs.get("healthy"):
            return []
        value = outputs.get("value")
        if not value:
            return [f"`{params['record']}` has no record in the hosted zone; check {self.where}.record."]
        return [f"`{params['record']}` points at {value}, expected {params.get('expect')}; switch it first or "
                "check the DR target."]

    # ---- check_target (read-only: the DR target answers; the record is not touched)

    def _host(self, params: Params) -> str:
        target = self._target(params)
        return target["dns_name"] if isinstance(target, dict) else target

    def _health_check_id(self, params: Params) -> tuple[str, str]:
        """The Route53 health check to read ("" for a TCP connect) and where it was configured."""
        if params.get("health_check_id"):
            return str(params["health_check_id"]), "the step's health_check_id"
        if self.settings.get("dr_health_check_id"):
            return str(self.settings["dr_health_check_id"]), f"{self.where}.dr_health_check_id"
        return "", ""

    def _port(self, params: Params) -> int:
        raw = params.get("port")
        if raw is None or raw == "":
            return DEFAULT_PORT
        try:
            port = int(raw)
        except (TypeError, ValueError):
            port = 0
        if not 0 < port < 65536:
            raise PermanentError(f"`port` must be a TCP port between 1 and 65535 (443 when left out); got {raw!r}.",
                                 provider=self.kind, code="InvalidParameter")
        return port

    def _plan_check(self, params: Params) -> dict[str, Any]:
        host, (check_id, where) = self._host(params), self._health_check_id(params)
        details: dict[str, Any] = {"target": host, "changes": "nothing: the record is not read or changed"}
        if check_id:
            details.update(health_check_id=check_id, method=f"Route53 health check `{check_id}` ({where})")
        else:
            try:
                port = self._port(params)
            except PermanentError as exc:
                details["problem"] = exc.message
                return details
            details.update(port=port, method=f"TCP connect to {host}:{port} within {CONNECT_TIMEOUT:g} s")
        return details

    def _preflight_check(self, params: Params) -> list[str]:
        try:
            self._port(params)
        except PermanentError as exc:
            return [exc.message]
        check_id, where = self._health_check_id(params)
        if not check_id:
            return []
        try:
            with aws_errors(provider=self.kind, doing=f"reading Route53 health check `{check_id}`", subject=check_id,
                            setting=where, preflight=True):
                self.client.get_health_check(HealthCheckId=check_id)
        except ProviderError as exc:
            if exc.code == "NoSuchHealthCheck":
                return [f"Route53 health check `{check_id}` does not exist; check {where} (the id of the DR "
                        f"target's health check, from `aws route53 list-health-checks`)."]
            raise
        return []

    def _start_check(self, params: Params, run_id: str) -> Operation:
        host, (check_id, where) = self._host(params), self._health_check_id(params)
        if check_id:
            healthy, detail = self._health_check_status(check_id, where=where, host=host)
        else:
            healthy, detail = tcp_answers(host, self._port(params), timeout=CONNECT_TIMEOUT)
        return self._instant(action="check_target", target=host, run_id=run_id,
                             status="healthy" if healthy else "unhealthy", message=detail,
                             outputs={"healthy": healthy, "detail": detail})

    def _health_check_status(self, check_id: str, *, where: str, host: str) -> tuple[bool, str]:
        with aws_errors(provider=self.kind, doing=f"reading the status of Route53 health check `{check_id}`",
                        subject=check_id, setting=where):
            observations = self.client.get_health_check_status(HealthCheckId=check_id)["HealthCheckObservations"]
        reports = [str((o.get("StatusReport") or {}).get("Status") or "") for o in observations]
        ok = [r for r in reports if r.startswith("Success")]
        if not reports:
            return False, (f"The DR target {host} has no result from Route53 health check `{check_id}` yet (no "
                           f"checker has reported); a new health check needs a minute or two.")
        if len(ok) / len(reports) > HEALTHY_SHARE:
            return True, (f"The DR target {host} passes Route53 health check `{check_id}`: {len(ok)} of "
                          f"{len(reports)} checkers report success.")
        failed = next((r for r in reports if not r.startswith("Success")), "")
        return False, (f"The DR target {host} fails Route53 health check `{check_id}`: {len(ok)} of {len(reports)} "
                       f"checkers report success" + (f" (a checker says: {failed.rstrip('.')})" if failed else "")
                       + ".")

    def _verify_check(self, params: Params, outputs: Mapping[str, Any]) -> list[str]:
        if outputs.get("healthy"):
            return []
        return [str(outputs.get("detail") or f"The DR target {params.get('target')} does not answer.")]


def tcp_answers(host: str, port: int, *, timeout: float) -> tuple[bool, str]:
    """Whether `host:port` accepts a TCP connection within `timeout` seconds, with a sentence saying so."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError:
        return False, f"The DR target {host} does not answer on TCP port {port}: no connection within {timeout:g} s."
    except socket.gaierror as exc:
        return False, (f"The DR target {host} does not resolve ({exc.strerror or exc}), so TCP port {port} was not "
                       f"tried.")
    except OSError as exc:
        return False, (f"The DR target {host} does not answer on TCP port {port}: the connection failed "
                       f"({exc.strerror or exc}).")
    return True, f"The DR target {host} accepts TCP connections on port {port}."
