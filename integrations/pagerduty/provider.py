"""The `pagerduty` resource over PagerDuty's REST API v2 with the official `pagerduty` client.

Why it is built this way:
- Every action is short, so it finishes inside `start` (`CloudProvider._instant`): the outputs travel in the
  operation handle and `poll` is pure.
- Status changes read the incident first and skip the PUT when it is already where the step wants it (resolving a
  resolved incident, acknowledging an acknowledged or resolved one): a retried or resumed step is a no-op, and the
  thread says so. If PagerDuty refuses the PUT (someone resolved it between our read and our write), the incident
  is read again and the step succeeds when it now stands where we wanted it.
- Notes are remembered in the StateStore under (incident, run, text), so a step retried after its POST succeeded
  does not post the same note twice; and before posting, the incident's notes are read, so a step run again after
  a crash between the POST and remembering it (a leader killed, another resuming) finds its note there.
- The client's own retry loop is switched off (`without_client_retries`): it retries 429 forever with
  `time.sleep`, which is unbounded and invisible to drbot's clock. `retrying` retries 429 and 5xx a bounded number
  of times with capped exponential backoff, honouring `Retry-After`, then raises TransientError for the engine.
- A blank `incident` counts as missing (a template that rendered empty), not only an absent one.
- The token is never in a message, output, plan or `repr`.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from integrations.common import ActionImpl, CloudProvider, Params
from integrations.pagerduty.errors import (
    DEFAULT_API_URL,
    FROM_ENV,
    KIND,
    TOKEN_ENV,
    URL_ENV,
    is_retryable,
    retry_after,
    translate,
)
from runbooks.actions import ACTIONS
from runbooks.errors import ConfigError, DrbotError, PermanentError
from runbooks.ports import Clock, Operation, StateStore

T = TypeVar("T")
DONE_FOR = {"acknowledged": ("acknowledged", "resolved"), "resolved": ("resolved",)}


class PagerDutyProvider(CloudProvider):
    """`pagerduty` resource: `note`, `acknowledge` and `resolve` on a PagerDuty incident."""

    kind = KIND
    resource = "pagerduty"
    state_kind = "pagerduty.notes"

    def __init__(self, *, environment: str, resource: str, settings: Mapping[str, Any], api_token: str | None,
                 from_email: str | None, api_url: str | None = None, verify: str | bool = True, client: Any = None,
                 state: StateStore | None = None, clock: Clock | None = None, attempts: int = 5,
                 backoff: float = 1.0, max_backoff: float = 30.0) -> None:
        super().__init__(environment=environment, resource=resource, settings=settings, client=client,
                         state=state, clock=clock)
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        if not self.api_url.startswith("https://"):
            raise ConfigError(f"{URL_ENV} must be an https:// address such as {DEFAULT_API_URL} (the PagerDuty "
                              f"client refuses anything else); got {self.api_url!r}.")
        self._token = api_token or None
        self.from_email = from_email or None
        self.tls_verify = verify
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff

    def __repr__(self) -> str:  # never show the token
        return f"PagerDutyProvider(environment={self.environment!r}, api_url={self.api_url!r})"

    # ---- plumbing

    @property
    def client(self) -> Any:
        """The pagerduty.RestApiV2Client, built on first use so that importing drbot stays fast."""
        if self._client is None:
            import pagerduty

            self._require_credentials()
            try:
                client = pagerduty.RestApiV2Client(str(self._token), default_from=self.from_email,
                                                   base_url=self.api_url, verify=self._tls())
            except pagerduty.UrlError as exc:
                raise translate(exc, doing="connecting", incident=None, token=self._token,
                                api_url=self.api_url) from exc
            self._client = without_client_retries(client)
        return self._client

    def _tls(self) -> ssl.SSLContext | bool:
        """httpx2 deprecates `verify=<path>`, so a CA bundle path becomes a context trusting only that bundle."""
        if not isinstance(self.tls_verify, str):
            return self.tls_verify
        try:
            return ssl.create_default_context(cafile=self.tls_verify)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{self.where}.ca_bundle: cannot read {self.tls_verify!r} as PEM CA certificates "
                              f"({exc}); give the path of a PEM file, e.g. `ca_bundle: /etc/ssl/certs/corp.pem`."
                              ) from exc

    def credential_problems(self) -> list[str]:
        problems = []
        if not self._token:
            problems.append(f"{TOKEN_ENV} is not set; export {TOKEN_ENV}=<a PagerDuty REST API key> (PagerDuty → "
                            "Integrations → API Access Keys).")
        if not self.from_email:
            problems.append(f"{FROM_ENV} is not set; PagerDuty needs a user's email in the From header to change "
                            f"an incident: export {FROM_ENV}=sre-bot@example.com (a user in your account).")
        return problems

    def _require_credentials(self) -> None:
        problems = self.credential_problems()
        if problems:
            raise PermanentError(" ".join(problems), provider=KIND, code="MissingCredentials")

    def retrying(self, doing: str, fn: Callable[[], T], *, incident: str | None = None) -> T:
        """Call `fn`, retrying 429/5xx/network errors with capped exponential backoff (Retry-After wins)."""
        for attempt in range(self.attempts):
            try:
                return fn()
            except DrbotError:  # already ours (a ca_bundle ConfigError, missing credentials): pass it on as is
                raise
            except Exception as exc:  # the client raises several unrelated types; translate() sorts them
                if not is_retryable(exc) or attempt == self.attempts - 1:
                    raise translate(exc, doing=doing, incident=incident, token=self._token,
                                    api_url=self.api_url) from exc
                wait = retry_after(exc)
                delay = min(self.max_backoff, wait if wait is not None else self.backoff * 2 ** attempt)
                self.clock.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _get_incident(self, incident: str) -> dict[str, Any]:
        found = self.retrying(f"reading incident `{incident}`", lambda: self.client.rget(f"/incidents/{incident}"),
                              incident=incident)
        return dict(found) if isinstance(found, dict) else {}

    # ---- CloudProvider hooks

    def _actions_table(self) -> dict[str, ActionImpl]:
        return {
            "note": ActionImpl(self._plan, self._preflight, self._start_note),
            "acknowledge": ActionImpl(self._plan, self._preflight, self._start_acknowledge),
            "resolve": ActionImpl(self._plan, self._preflight, self._start_resolve),
        }

    def _missing_params(self, name: str, params: Params) -> list[str]:
        required = ACTIONS[f"{self.resource}.{name}"].required
        return sorted(p for p in required if params.get(p) is None or str(params.get(p)).strip() == "")

    def _probe(self) -> list[str]:
        problems = self.credential_problems()
        if self._token:
            try:
                self.retrying("listing the account's abilities (GET /abilities)",
                              lambda: self.client.rget("/abilities"))
            except ConfigError as exc:
                problems.append(exc.message)
            except PermanentError as exc:
                problems.append(f"PagerDuty at {self.api_url} is not usable: {exc.message}")
        return problems

    # ---- actions

    def _plan(self, params: Params) -> dict[str, Any]:
        incident = self._get_incident(str(params["incident"]))
        details: dict[str, Any] = {"incident": params["incident"], "status_now": incident.get("status"),
                                   "title": incident.get("title") or incident.get("summary"),
                                   "html_url": incident.get("html_url")}
        if incident.get("status") == "resolved":
            details["note"] = "Already resolved in PagerDuty; resolving again changes nothing."
        return details

    def _preflight(self, params: Params) -> list[str]:
        problems = self.credential_problems()
        if problems:
            return problems
        try:
            self._get_incident(str(params["incident"]))
        except PermanentError as exc:
            return [exc.message]
        return []

    def _start_note(self, params: Params, run_id: str) -> Operation:
        incident = str(params["incident"])
        note_id = self._post_note(incident, str(params["text"]), run_id)
        return self._instant(action="note", target=incident, run_id=run_id, outputs={"note_id": note_id},
                             status="created", message=f"Note {note_id} added to PagerDuty incident {incident}.")

    def _start_acknowledge(self, params: Params, run_id: str) -> Operation:
        incident = str(params["incident"])
        status, changed = self._transition(incident, "acknowledged")
        message = (f"PagerDuty incident {incident} acknowledged." if changed else
                   f"PagerDuty incident {incident} was already {status}; nothing to change.")
        return self._instant(action="acknowledge", target=incident, run_id=run_id, outputs={"status": status},
                             status=status, message=message)

    def _start_resolve(self, params: Params, run_id: str) -> Operation:
        incident = str(params["incident"])
        note = str(params.get("note") or "").strip()
        current = str(self._get_incident(incident).get("status") or "")
        if current == "resolved" or not note:
            if note:  # already resolved: the note still goes on the record, as the sandbox does
                self._post_note(incident, note, run_id)
            status, changed = self._transition(incident, "resolved", current=current)
        else:
            status, changed = self._transition(incident, "resolved", current=current, resolution=note)
            if changed:  # PagerDuty kept the resolution as a note: a retried step must not post it again
                self._remember(self._note_key(incident, note, run_id), {"note_id": "resolution",
                                                                        "incident": incident})
            else:  # resolved by someone else meanwhile: the note still belongs on the record
                self._post_note(incident, note, run_id)
        message = (f"PagerDuty incident {incident} resolved." if changed else
                   f"PagerDuty incident {incident} was already resolved; nothing to change.")
        return self._instant(action="resolve", target=incident, run_id=run_id, outputs={"status": status},
                             status=status, message=message)

    # ---- helpers

    def _note_key(self, incident: str, text: str, run_id: str) -> str:
        return f"{self.environment}/{incident}/{run_id}/{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    def _post_note(self, incident: str, text: str, run_id: str) -> str:
        key = self._note_key(incident, text, run_id)
        remembered = self._recall(key)
        if remembered and remembered.get("note_id"):
            return str(remembered["note_id"])
        self._require_credentials()
        # Describe before create: a process that died after the POST and before remembering it (a leader killed
        # mid-step, whose step a new leader runs again) left the note on the incident; find it, do not post again.
        notes = self.retrying(f"reading the notes of incident `{incident}`",
                              lambda: self.client.rget(f"/incidents/{incident}/notes"), incident=incident)
        for existing in notes if isinstance(notes, list) else []:
            if isinstance(existing, dict) and existing.get("content") == text and existing.get("id"):
                self._remember(key, {"note_id": str(existing["id"]), "incident": incident})
                return str(existing["id"])
        note = self.retrying(f"adding a note to incident `{incident}`",
                             lambda: self.client.rpost(f"/incidents/{incident}/notes", json={"content": text}),
                             incident=incident)
        note_id = str(note.get("id") if isinstance(note, dict) else "")
        self._remember(key, {"note_id": note_id, "incident": incident})
        return note_id

    def _transition(self, incident: str, target: str, *, current: str | None = None,
                    resolution: str | None = None) -> tuple[str, bool]:
        """Move the incident to `target` unless it is already there; (status now, whether drbot changed it)."""
        self._require_credentials()
        if current is None:
            current = str(self._get_incident(incident).get("status") or "")
        if current in DONE_FOR[target]:
            return current, False
        body: dict[str, Any] = {"type": "incident_reference", "status": target}
        if resolution:
            body["resolution"] = resolution
        doing = f"setting incident `{incident}` to {target}"
        try:
            updated = self.retrying(doing, lambda: self.client.rput(f"/incidents/{incident}", json=body),
                                    incident=incident)
        except PermanentError as exc:
            if exc.code != "400":
                raise
            now = str(self._get_incident(incident).get("status") or "")
            if now in DONE_FOR[target]:  # someone else got there between our read and our write
                return now, False
            raise
        return str(updated.get("status") if isinstance(updated, dict) else target) or target, True


def without_client_retries(client: Any) -> Any:
    """Make the client hand every failed response straight back (no sleeps), so `retrying` decides.

    `retry[429] = 1` routes 429 through the client's counted branch, and `max_http_attempts = -1` makes that
    branch give up before its first sleep; `max_network_attempts = 0` does the same for connection errors.
    """
    client.retry = {429: 1}
    client.max_http_attempts = -1
    client.max_network_attempts = 0
    return client
