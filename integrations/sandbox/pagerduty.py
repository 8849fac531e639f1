"""Sandbox twin of the PagerDuty incident API: notes and resolution, recorded in state (kind `sandbox.pagerduty`,
one record per incident with its `notes` list) so a demo's post-mortem can show what PagerDuty was told.

Incidents need no seeding: PagerDuty ids arrive with webhooks, so the sandbox treats any id as a triggered
incident the first time it is touched.
"""

from __future__ import annotations

from typing import Any

from integrations.common import ActionImpl, Params
from integrations.sandbox.phases import stamp
from integrations.sandbox.records import Write, digest
from integrations.sandbox.world import SandboxProvider
from runbooks.ports import Operation

PD_KIND = "sandbox.pagerduty"


def notes(state_record: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((state_record or {}).get("notes", []))


class SandboxPagerDuty(SandboxProvider):
    resource = "pagerduty"

    def _actions_table(self) -> dict[str, ActionImpl]:
        return {
            "note": ActionImpl(self._plan, self._preflight, self._start_note),
            "resolve": ActionImpl(self._plan, self._preflight, self._start_resolve),
            "acknowledge": ActionImpl(self._plan, self._preflight, self._start_acknowledge),
        }

    def _incident(self, incident: Any) -> dict[str, Any]:
        return self._load(PD_KIND, str(incident)) or {"id": str(incident), "status": "triggered", "notes": [],
                                                      "resolved_at": None}

    def _plan(self, params: Params) -> dict[str, Any]:
        incident = self._incident(params["incident"])
        details = {"incident": params["incident"], "status_now": incident["status"],
                   "notes_so_far": len(incident["notes"])}
        if incident["status"] == "resolved":
            details["note"] = "Already resolved in PagerDuty; resolving again changes nothing."
        return details

    def _preflight(self, params: Params) -> list[str]:
        if str(params["incident"]).strip():
            return []
        return ["`incident` is empty; give the PagerDuty incident id, e.g. Q1ABCDEFGHIJKL."]

    def _with_note(self, incident: dict[str, Any], text: str, run_id: str) -> tuple[dict[str, Any], str]:
        note_id = "P" + digest("note", incident["id"], run_id, text).upper()[:6]
        note = {"id": note_id, "content": text, "created_at": stamp(self.clock.now()), "run_id": run_id}
        return {**incident, "notes": [*incident["notes"], note]}, note_id

    def _start_note(self, params: Params, run_id: str) -> Operation:
        incident = self._incident(params["incident"])
        updated, note_id = self._with_note(incident, str(params["text"]), run_id)
        return self._begin(action="note", target=incident["id"], run_id=run_id, timeline=self._instant("created"),
                           outputs={"note_id": note_id}, writes=[Write(PD_KIND, incident["id"], updated)],
                           inflight_key=note_id)

    def _start_resolve(self, params: Params, run_id: str) -> Operation:
        incident = self._incident(params["incident"])
        updated = dict(incident)
        if params.get("note"):
            updated, _ = self._with_note(incident, str(params["note"]), run_id)
        if incident["status"] != "resolved":
            updated.update(status="resolved", resolved_at=stamp(self.clock.now()))
        return self._begin(action="resolve", target=incident["id"], run_id=run_id,
                           timeline=self._instant("resolved"), outputs={"status": "resolved"},
                           writes=[Write(PD_KIND, incident["id"], updated)])

    def _start_acknowledge(self, params: Params, run_id: str) -> Operation:
        """Acknowledging an acknowledged or resolved incident changes nothing, as in PagerDuty."""
        incident = self._incident(params["incident"])
        updated = dict(incident)
        if incident["status"] == "triggered":
            updated.update(status="acknowledged", acknowledged_at=stamp(self.clock.now()))
        return self._begin(action="acknowledge", target=incident["id"], run_id=run_id,
                           timeline=self._instant(str(updated["status"])), outputs={"status": updated["status"]},
                           writes=[Write(PD_KIND, incident["id"], updated)])
