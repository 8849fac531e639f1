"""Engine events → the incident's Slack thread.

One worker thread posts in event order, so the thread reads like the timeline and no engine step waits on Slack.
Each incident has a parent message (the header, updated in place as the RTO budget moves), a checklist message,
and one card per run, updated with `chat.update` at every step. Their `ts` are stored in drbot's database, so
after a restart the bot keeps updating the same messages. A failed Slack call is retried with backoff; one that
keeps failing is logged with an error id, and the thread post it was for is made by the next catch-up (when the
notifier is idle: 5 s after start, then every minute), as are posts still queued when the process stopped.

**Exactly once.** Every post goes through `bot.slack.posting.Poster`, which tags it with its identity and looks
for it before posting again after an ambiguous failure (see that module).

**Late posts are folded into the card.** A thread post of a run's `run.planned`, `approval.requested` or
`run.paused` event — what the run card shows too — is not posted, and is recorded as folded, once it has been
overtaken: a later terminal event of the same run (`run.succeeded`, `failed`, `cancelled`, `rejected`,
`expired`, `preflight_failed`) is already posted in the thread; or, for a post the catch-up makes (late by
definition), that terminal event is in the store (it is posted next), or the request or decision the post asks
for has been answered. The card, updated either way, shows the plan, the answers and the final state; a plan
arriving after "finished successfully" only misleads. Never folded: terminal outcomes, a request nobody has
answered yet, reports, notices, and incident or PagerDuty posts — what they say is not on the card.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from bot.slack import blocks
from bot.slack.blocks_kit import clip, esc
from bot.slack.posting import Poster, error_of, looking_client
from runbooks.engine import Engine
from runbooks.incidents import CHANNEL
from runbooks.models import Event, EventKind, Incident
from runbooks.notices import Notice
from runbooks.timeline import iso

log = logging.getLogger("drbot.slack")

THREAD = "slack"  # Incident.external key: {"channel": …, "ts": …}
CARD_KIND = "slack.card"  # provider_state kind for run cards and checklist messages
HEADER_EVERY = 1.0  # seconds: during a burst, headers are still refreshed this often
POSTED = "slack.posted"  # provider_state kind: `<incident>:<event seq>` → the thread message's ts
TOLD = "slack.told"  # provider_state kind: `<incident>:<event seq>` told privately to the requester
CATCH_UP_FIRST = 5.0  # seconds of idleness after start before the first catch-up
CATCH_UP_EVERY = 60.0
CATCH_UP_NOW: Any = object()  # queued by `lead()`
TERMINAL = frozenset({EventKind.RUN_SUCCEEDED, EventKind.RUN_FAILED, EventKind.RUN_CANCELLED, EventKind.RUN_REJECTED,
                      EventKind.RUN_EXPIRED, EventKind.RUN_PREFLIGHT_FAILED})
FOLDABLE = frozenset({EventKind.RUN_PLANNED, EventKind.APPROVAL_REQUESTED, EventKind.RUN_PAUSED})
"""Posts whose content the run card shows as well: the only ones that may be folded when late."""

Failure = Literal["rate", "unsure", "final"]


class SlackNotifier:
    def __init__(self, *, engine: Engine, client: Any, default_channel: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, catch_up: bool = True) -> None:
        self.engine = engine
        self.client = looking_client(client)
        self.default_channel = default_channel
        self.sleep = sleep
        self.poster = Poster(client=self.client, marks=engine.marks, sleep=lambda seconds: self.sleep(seconds))
        self.catching_up = catch_up
        self._queue: queue.Queue[Any] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="drbot-slack-notifier", daemon=True)
        self._lock = threading.RLock()
        self._idle = threading.Event()
        self._idle.set()
        self.yield_to: Callable[[], None] = lambda: None
        """Called before each event: the surface makes it wait (briefly) while requests are being answered."""
        self._dirty: list[str] = []  # incidents whose header needs a `chat.update` (only this thread touches it)
        self._flushed = time.monotonic()
        self._worker.start()

    # ------------------------------------------------------------------------------------------- queue

    def notify(self, event: Event) -> None:
        self._idle.clear()
        self._queue.put((event, False))

    def announce(self, notice: Notice) -> None:
        """A notice for the incident channel (an RPO breach, a scheduled drill's result), posted once."""
        self._idle.clear()
        self._queue.put(notice)

    def _post_notice(self, notice: Notice) -> None:
        key = f"notice:{notice.key}"
        if self.engine.marks.load_state(kind=POSTED, key=key) is not None:
            return
        if not self.default_channel:
            log.error("no Slack channel for the notice %s: set slack.incident_channel in drbot.yml", notice.key)
            return
        text = clip(notice.text, 2900)
        _, ts = self.poster.post(key, channel=self.default_channel, thread_ts=None, text=text,
                                 blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": esc(text)}}])
        self.engine.marks.save_state(kind=POSTED, key=key, value={"ts": ts})

    def _notify_late(self, event: Event) -> None:
        """Queue a post the catch-up found missing: late, so it may be folded (see the module docstring)."""
        self._idle.clear()
        self._queue.put((event, True))

    def lead(self) -> None:
        """This process now leads (`drbot serve`'s worker): post at once what the last leader left unposted,
        then catch up whenever idle, as a notifier that led from the start does."""
        self.catching_up = True
        self._queue.put(CATCH_UP_NOW)

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=10)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event is posted (tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.is_set():
                return True
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        wait = CATCH_UP_FIRST if self.catching_up else None
        while True:
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = CATCH_UP_NOW
            if item is None:
                self._flush_headers()
                return
            if item is CATCH_UP_NOW:  # idle, or just elected: post what an outage or a restart kept from the thread
                wait = CATCH_UP_EVERY
                try:
                    self.catch_up()
                except Exception:
                    log.exception("slack notifier error %s catching up", uuid.uuid4().hex[:8])
                continue
            if isinstance(item, Notice):
                try:
                    self._post_notice(item)
                except Exception:  # stored: the next catch-up posts it
                    log.exception("slack notifier error %s on notice %s", uuid.uuid4().hex[:8], item.key)
                finally:
                    if self._queue.empty():
                        self._idle.set()
                continue
            event, late = item
            try:
                self.yield_to()
                self._process(event, late=late)
                if self._queue.empty() or time.monotonic() - self._flushed > HEADER_EVERY:
                    self._flush_headers()
            except Exception:  # one bad event must not stop the thread's updates; it is in the store anyway
                log.exception("slack notifier error %s on event %s (%s)", uuid.uuid4().hex[:8], event.seq, event.kind)
            finally:
                if self._queue.empty():
                    self._idle.set()

    def catch_up(self, *, window: timedelta = timedelta(days=1)) -> int:
        """Queue the thread posts that never made it: Slack was down longer than the retries, or the process
        stopped with events still queued. Each post is recorded once it is made (kind `slack.posted`), so
        nothing is posted twice. Looks at incidents with a thread that are open or resolved within `window`; also
        posts a checklist or a run card whose first post never made it. Returns how many events were queued."""
        since = self.engine.clock.now() - window
        queued = 0
        for incident in self.engine.queries.list_incidents():
            if not isinstance(incident.external.get(THREAD), dict) or (
                    incident.resolved_at is not None and incident.resolved_at < since):
                continue
            try:
                self._ensure_messages(incident)
            except Exception as exc:  # Slack still down: the next catch-up tries again; the events go on below
                log.warning("slack notifier error %s: the checklist or a run card of %s is not in Slack yet (%s)",
                            uuid.uuid4().hex[:8], incident.id, error_of(exc))
            done = self.engine.marks.list_state(kind=POSTED, prefix=f"{incident.id}:")
            for event in self.engine.queries.events_for(incident_id=incident.id):
                if event.at >= since and f"{incident.id}:{event.seq}" not in done \
                        and blocks.event_message(event) is not None:
                    self._notify_late(event)
                    queued += 1
        for notice in self.engine.notices.since(since):
            if self.engine.marks.load_state(kind=POSTED, key=f"notice:{notice.key}") is None:
                self.announce(notice)
                queued += 1
        if queued:
            log.warning("posting %d thread message(s) that had not reached Slack", queued)
        return queued

    def _flush_headers(self) -> None:
        """Headers re-render the whole incident, so a burst of events (an alert storm, a fast run) needs one
        `chat.update` per incident at the end, not one per event: fewer calls under Slack's rate limits."""
        self._flushed = time.monotonic()
        while self._dirty:
            incident_id = self._dirty.pop(0)
            try:
                self.update_header(incident_id)
            except Exception:
                log.exception("slack notifier error %s updating the header of %s", uuid.uuid4().hex[:8], incident_id)

    # ------------------------------------------------------------------------------------------- messages

    def _process(self, event: Event, *, late: bool = False) -> None:
        incident = self.engine.queries.get_incident(event.incident_id)
        if incident is None:
            return
        thread = self.ensure_thread(incident, channel=None)
        if thread is None:
            return
        channel, ts = thread
        message = blocks.event_message(event)
        key = f"{incident.id}:{event.seq}"
        if message is not None and (not event.seq or self.engine.marks.load_state(kind=POSTED, key=key) is None):
            if event.seq and self._overtaken(event, late=late):
                self.engine.marks.save_state(kind=POSTED, key=key, value={"folded": True})
                log.info("%s of %s folded into its card: overtaken before it could be posted", event.kind,
                         event.run_id)
                message = None
            else:
                people = self._people(event)  # rendered again: now with the mentions it may show
                message = blocks.event_message(event, people=people) or message
                text = blocks.event_line(event, people=people)
                if event.seq:
                    _, posted = self.poster.post(key, channel=channel, thread_ts=ts, blocks=message, text=text)
                    self.engine.marks.save_state(kind=POSTED, key=key, value={"ts": posted})
                else:  # not a stored event: nothing to find it by
                    self.poster.call("chat_postMessage", channel=channel, thread_ts=ts, blocks=message, text=text)
        if message is not None and event.data.get("tell"):
            self._tell(event, channel=channel, thread_ts=ts, key=key)
        if event.run_id is not None:
            self.update_card(event.run_id, channel=channel, thread_ts=ts)
        if event.kind.startswith(("incident.", "rto.", EventKind.RUN_SUCCEEDED, "checklist.", "pagerduty.")) \
                and incident.id not in self._dirty:
            self._dirty.append(incident.id)
        if event.kind == EventKind.CHECKLIST_TICKED:
            self.update_checklist(incident.id)

    def _people(self, event: Event) -> frozenset[str]:
        """The Slack ids that may show as mentions in the event's post: those the event names (`people_in`), the
        run's requester, and the requester and approvers of the request it is about — ids drbot has from Slack
        and its settings, never from typed text (see `blocks_kit.esc`)."""
        named = set(blocks.people_in(event))
        if event.run_id and event.kind.startswith(("run.", "approval.")):
            run = self.engine.queries.get_run(event.run_id)
            if run is not None:
                named.add(run.requested_by)
        request_id = event.data.get("request_id")
        if request_id:
            request = self.engine.queries.get_request(str(request_id))
            if request is not None:
                named.update((request.requested_by, *request.approvers))
        return frozenset(named)

    def _overtaken(self, event: Event, *, late: bool) -> bool:
        """Whether the post is folded into the card (the rule is in the module docstring)."""
        if event.kind not in FOLDABLE or event.run_id is None:
            return False
        asked = [event.data.get("request_id"), *dict(event.data.get("requests") or {}).values()]
        requests = [r for r in (self.engine.queries.get_request(str(a)) for a in asked if a) if r is not None]
        if any(r.status == "pending" for r in requests):
            return False
        if late and requests:
            return True
        outcomes = [e for e in self.engine.queries.events_for(incident_id=event.incident_id, run_id=event.run_id,
                                                            after_seq=event.seq) if e.kind in TERMINAL]
        if late:
            return bool(outcomes)
        return any(self.engine.marks.load_state(kind=POSTED, key=f"{e.incident_id}:{e.seq}") is not None
                   for e in outcomes)

    def _tell(self, event: Event, *, channel: str, thread_ts: str, key: str) -> None:
        """Say a run's end privately to the person who asked for it as well (the thread may be busy): once."""
        if event.seq is not None and not self.engine.marks.claim_once(kind=TOLD, key=key, value={}):
            return
        try:
            self.poster.call("chat_postEphemeral", repeatable=False, channel=channel, user=str(event.data["tell"]),
                       thread_ts=thread_ts, text=blocks.event_line(event, people=self._people(event)))
        except Exception:  # the thread has it already; a private copy that cannot be delivered is only logged
            log.warning("slack notifier could not tell %s privately about event %s", event.data["tell"], event.seq)

    def ensure_thread(self, incident: Incident, *, channel: str | None) -> tuple[str, str] | None:
        """The incident's (channel, parent ts), posting the parent message and checklist the first time."""
        with self._lock:
            fresh = self.engine.queries.get_incident(incident.id) or incident
            found = fresh.external.get(THREAD)
            if isinstance(found, dict) and found.get("ts"):
                return str(found["channel"]), str(found["ts"])
            routed = fresh.external.get(CHANNEL)  # where the command or the PagerDuty route that opened it was
            target = (str(routed) if routed else None) or channel or self.default_channel
            if target is None:
                log.error("no Slack channel for %s: set slack.incident_channel in drbot.yml", incident.id)
                return None
            tier = self.engine.tier(fresh.tier)
            items = self.engine.queries.checklist(incident_id=fresh.id)
            header = blocks.incident_header(incident=fresh, tier=tier, now=self.engine.clock.now(),
                                            pagerduty_url=fresh.external.get("pagerduty_url"),
                                            checklist_done=sum(1 for i in items if i.done_at),
                                            checklist_total=len(items))
            channel_id, ts = self.poster.post(f"header:{fresh.id}", channel=target, thread_ts=None, blocks=header,
                                        text=blocks.header_text(fresh), extra={"opened": iso(fresh.opened_at)})
            self.engine.marks.remember_thread(fresh.id, key=THREAD, value={"channel": channel_id, "ts": ts})
            if items:
                self._post_checklist(fresh.id, channel=channel_id, thread_ts=ts)
            return channel_id, ts

    def _post_checklist(self, incident_id: str, *, channel: str, thread_ts: str) -> None:
        items = self.engine.queries.checklist(incident_id=incident_id)
        checklist = blocks.checklist_blocks(incident_id=incident_id, checklist=self.engine.catalog.checklist,
                                            items=items, now=self.engine.clock.now())
        _, ts = self.poster.post(f"checklist:{incident_id}", channel=channel, thread_ts=thread_ts, blocks=checklist,
                           text=blocks.checklist_text(incident_id))
        self.engine.marks.save_state(kind=CARD_KIND, key=f"{incident_id}:checklist",
                                     value={"channel": channel, "ts": ts})

    def _ensure_messages(self, incident: Incident) -> None:
        """The checklist and run cards of a thread whose first post failed for good (the catch-up's part)."""
        thread = incident.external[THREAD]
        channel, ts = str(thread["channel"]), str(thread["ts"])
        if self.engine.queries.checklist(incident_id=incident.id) \
                and self.engine.marks.load_state(kind=CARD_KIND, key=f"{incident.id}:checklist") is None:
            self._post_checklist(incident.id, channel=channel, thread_ts=ts)
        for run in self.engine.queries.runs_for(incident_id=incident.id):
            if self.engine.marks.load_state(kind=CARD_KIND, key=run.id) is None:
                self.update_card(run.id, channel=channel, thread_ts=ts)

    def update_header(self, incident_id: str) -> None:
        incident = self.engine.queries.get_incident(incident_id)
        if incident is None or not isinstance(incident.external.get(THREAD), dict):
            return
        thread = incident.external[THREAD]
        items = self.engine.queries.checklist(incident_id=incident.id)
        header = blocks.incident_header(incident=incident, tier=self.engine.tier(incident.tier),
                                        now=self.engine.clock.now(),
                                        pagerduty_url=incident.external.get("pagerduty_url"),
                                        checklist_done=sum(1 for i in items if i.done_at), checklist_total=len(items))
        self.poster.call("chat_update", channel=thread["channel"], ts=thread["ts"], blocks=header,
                   text=blocks.header_text(incident))

    def update_checklist(self, incident_id: str) -> None:
        where = self.engine.marks.load_state(kind=CARD_KIND, key=f"{incident_id}:checklist")
        if where is None:
            return
        items = self.engine.queries.checklist(incident_id=incident_id)
        checklist = blocks.checklist_blocks(incident_id=incident_id, checklist=self.engine.catalog.checklist,
                                            items=items, now=self.engine.clock.now())
        self.poster.call("chat_update", channel=where["channel"], ts=where["ts"], blocks=checklist,
                   text=blocks.checklist_text(incident_id))

    def update_card(self, run_id: str, *, channel: str, thread_ts: str) -> None:
        run = self.engine.queries.get_run(run_id)
        if run is None:
            return
        env = self.engine.settings.environments.get(run.environment)
        card = blocks.run_card(run=run, steps=self.engine.queries.steps_for(run_id=run.id),
                               requests=self.engine.queries.requests_for(run_id=run.id),
                               votes=[v for r in self.engine.queries.requests_for(run_id=run.id)
                                      for v in self.engine.queries.votes(request_id=r.id)],
                               now=self.engine.clock.now(),
                               confirm_on_approve=bool(
                                   env and self.engine.settings.approvals(env, drill=run.drill).required > 0))
        text = blocks.card_text(run)
        where = self.engine.marks.load_state(kind=CARD_KIND, key=run.id)
        if where is None:
            with self._lock:  # the catch-up may be posting the same card from another thread
                where = self.engine.marks.load_state(kind=CARD_KIND, key=run.id)
                if where is None:
                    _, ts = self.poster.post(f"card:{run.id}", channel=channel, thread_ts=thread_ts, blocks=card,
                                       text=text)
                    self.engine.marks.save_state(kind=CARD_KIND, key=run.id, value={"channel": channel, "ts": ts})
                    return
        self.poster.call("chat_update", channel=where["channel"], ts=where["ts"], blocks=card, text=text)

