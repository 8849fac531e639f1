"""The Slack surface: `build_app(engine, settings)` makes a Bolt app with drbot's listeners; no global App.

Listeners ack at once (Slack wants a 2xx within 3 s) and hand the work to a small thread pool that calls the
engine and posts the outcome. Parse errors and refusals are ephemeral. Retries of requests that were already
acknowledged (`X-Slack-Retry-Num`) and repeated `event_id`s are acknowledged again and run nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bot.config import Settings
from bot.door import SeenSignatures
from bot.slack.identity import GroupResolver
from bot.slack.jobs import Click, Job, Mention, Publish, SlashCommand, asker
from bot.slack.metrics import Metrics
from bot.slack.notifier import SlackNotifier
from runbooks.engine import Engine
from runbooks.models import Event, Incident, IncidentStatus

log = logging.getLogger("drbot.slack")

EVENT_KIND = "slack.event"  # provider_state kind: event ids already handled
CHOICE_TTL = 600.0
REPLAY = "a replay of a signed Slack request (%s job): its signature was seen before, so nothing was run"
NOT_IN_CHANNEL = {"not_in_channel", "channel_not_found", "user_not_in_channel", "is_archived"}


@dataclass
class Surface:
    """What the listeners share: the engine, the Web API client, the notifier and the worker pool."""

    engine: Engine
    client: Any
    notifier: SlackNotifier
    groups: GroupResolver
    metrics: Metrics
    seen: SeenSignatures
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="drbot-slack"))
    """One worker: the work after an ack is short (the engine decides, long runs go to DBOS), and every extra
    thread competing for the GIL delays the acks of the next requests (see bench/bench_ack.py)."""
    _choices: dict[tuple[str, str], tuple[float, SlashCommand]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    _busy: int = 0

    inflight: int = 0
    """Requests being answered right now: Slack's (to ack) and PagerDuty's webhooks (counted by the routes)."""

    shared: Any = None
    """A `multiprocessing.Value` the front and the worker share: requests in flight at the front (two-process
    `drbot serve`), so that the worker's jobs also wait for a gap."""

    def enter(self) -> None:
        self.inflight += 1  # called on the event loop only: one thread, no lock
        if self.shared is not None:
            self.shared.value = self.inflight

    def leave(self) -> None:
        self.inflight -= 1
        if self.shared is not None:
            self.shared.value = self.inflight

    def busy(self) -> bool:
        return self.inflight > 0 or (self.shared is not None and self.shared.value > 0)

    def yield_to_acks(self, *, longest: float = 0.25) -> None:
        """Background work waits (briefly) for a gap in incoming requests: acks come first. Under a burst a job
        still runs at least every `longest` seconds; between bursts it runs at once."""
        deadline = time.monotonic() + longest
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.01)

    forward: Callable[[Job], bool] | None = None
    """When set (the front of `drbot serve`), jobs go to the jobs table (`bot.jobqueue.JobQueue.put`, False for
    a replay) for the leading worker, instead of this pool."""

    def submit(self, job: Job, *, done: Callable[[str | None], None] | None = None) -> None:
        """Run a job (`bot.slack.jobs`) after the ack: here, or — on the front — queue it for the leader before
        the ack is sent. It runs only if the Slack request it answers (`job.once`) was never claimed before: a
        replay of the same signed bytes, in any process, runs nothing. `done(error)` is called once it ran."""
        if self.forward is not None:
            self._queue(job)
            return

        def guarded() -> None:
            error: str | None = None
            try:
                self.yield_to_acks()
                if job.once is not None and not self.seen.first_time(job.once):
                    log.warning(REPLAY, type(job).__name__)
                    return
                run_job(self, job)
            except Exception as exc:  # a bug: logged once with an id
                error_id = uuid.uuid4().hex[:8]
                error = f"{type(exc).__name__} (error {error_id})"
                log.exception("slack work failed (error %s)", error_id)
            finally:
                with self._lock:
                    self._busy -= 1
                if done is not None:
                    done(error)

        with self._lock:
            self._busy += 1
        self.pool.submit(guarded)

    def _queue(self, job: Job) -> None:
        assert self.forward is not None
        try:
            if not self.forward(job):
                log.warning(REPLAY, type(job).__name__)
        except Exception as exc:  # the database did not take it: nothing will run, so say so now
            log.error("could not queue a %s job (%s): the person is told nothing was done", type(job).__name__,
                      type(exc).__name__)
            where = asker(job)
            if where is not None:
                channel, user, response_url = where
                with contextlib.suppress(Exception):
                    self.ephemeral(channel=channel, user=user, response_url=response_url, text=(
                        ":x: drbot could not take this: its database did not answer. Nothing was done; try "
                        "again in a moment."))

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once no submitted work is running or queued (tests, and a clean shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._busy == 0:
                    return True
            time.sleep(0.01)
        return False

    def ephemeral(self, *, channel: str, user: str, text: str, blocks: list[dict[str, Any]] | None = None,
                  thread_ts: str | None = None, response_url: str | None = None) -> None:
        """A reply only `user` sees. `chat.postEphemeral` needs the bot in the channel (it is, wherever it posts
        threads); where it is not — a private channel, a DM — the request's `response_url` still reaches the
        person, so a refusal is never silent."""
        from slack_sdk.errors import SlackApiError

        try:
            self.client.chat_postEphemeral(channel=channel, user=user, text=text, blocks=blocks, thread_ts=thread_ts)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "")) if exc.response is not None else ""
            if not response_url or error not in NOT_IN_CHANNEL:
                raise
            from slack_sdk.webhook import WebhookClient

            sent = WebhookClient(response_url).send(text=text, blocks=blocks, response_type="ephemeral",
                                                    replace_original=False)
            if sent.status_code != 200:
                log.error("could not reach %s in %s: chat.postEphemeral said %s and response_url answered %s",
                          user, channel, error, sent.status_code)

    def open_incidents_in(self, channel: str) -> list[Incident]:
        found = []
        for incident in self.engine.queries.list_incidents(open_only=True):
            thread = incident.external.get("slack")
            if isinstance(thread, dict) and thread.get("channel") == channel \
                    and incident.status is not IncidentStatus.RESOLVED:
                found.append(incident)
        return found

    def remember_choice(self, job: SlashCommand) -> None:
        """A command waiting for its user to say which incident it is for (see `commands.route`)."""
        with self._lock:
            self._choices[(job.user, job.channel)] = (time.monotonic(), job)

    def take_choice(self, *, user: str, channel: str) -> SlashCommand | None:
        with self._lock:
            found = self._choices.pop((user, channel), None)
        if found is None or time.monotonic() - found[0] > CHOICE_TTL:
            return None
        return found[1]

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.notifier.close()


def run_job(surface: Surface, job: Job) -> None:
    """Everything that happens after an ack."""
    from bot.slack import actions, commands, events

    match job:
        case SlashCommand():
            commands.route(surface, job)
        case Click(kind="press"):
            actions.press(surface, body=job.body)
        case Click(kind="tick"):
            actions.tick(surface, body=job.body)
        case Click(kind="choose"):
            actions.choose(surface, body=job.body)
        case Mention():
            events.hint(surface, channel=job.channel, thread=job.thread)
        case Publish():  # an event stored by the HTTP front (a PagerDuty webhook), for the worker's notifiers
            surface.engine.publish(Event.model_validate(job.event))


def build_client(settings: Settings) -> Any:
    from slack_sdk import WebClient
    from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    kwargs: dict[str, Any] = {"token": token}
    if settings.slack_api_url:
        kwargs["base_url"] = settings.slack_api_url.rstrip("/") + "/"
    client = WebClient(**kwargs)
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=3))
    return client


class Forwarder:
    """The front's notifier: events its engine stores (PagerDuty webhooks) are shown by the worker's notifiers."""

    def __init__(self, forward: Callable[[Job], bool]) -> None:
        self.forward = forward

    def notify(self, event: Event) -> None:
        self.forward(Publish(event=event.model_dump(mode="json")))


def build_app(engine: Engine, settings: Settings, *, client: Any | None = None, default_channel: str | None = None,
              forward: Callable[[Job], bool] | None = None, leading: bool = True) -> tuple[Any, Surface]:
    """The Bolt app and the surface behind it. The caller owns both (no module-level App). With `forward`, this
    is the front of a two-process `drbot serve`: listeners ack here and their jobs, like the events this
    process stores, go to the jobs table for the leading worker (see `bot.serve`). `leading=False`: a worker
    that may stand by, whose notifier catches up only once it leads (`SlackNotifier.lead`)."""
    from slack_bolt import App, BoltResponse

    from bot.slack import actions, commands, events

    client = client or build_client(settings)
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    app = App(client=client, signing_secret=secret, process_before_response=True,
              token_verification_enabled=False, raise_error_for_unhandled_request=False)
    # The front of a two-process serve shows nothing itself (its events go to the worker): no catch-up there.
    notifier = SlackNotifier(engine=engine, client=client, default_channel=default_channel,
                             catch_up=forward is None and leading)
    engine.notifiers.append(notifier if forward is None else Forwarder(forward))
    surface = Surface(engine=engine, client=client, notifier=notifier, groups=GroupResolver(client),
                      metrics=Metrics(engine), seen=SeenSignatures(engine.marks), forward=forward)
    notifier.yield_to = surface.yield_to_acks

    @app.middleware
    def drop_retries(req: Any, resp: Any, next: Callable[[], Any]) -> Any:
        """Slack retries a request whose ack it did not see in time; the first delivery is being handled."""
        retry = req.headers.get("x-slack-retry-num") or []
        retry = retry[0] if isinstance(retry, list) and retry else retry
        if retry and str(retry) != "0":  # Socket Mode sends retry_attempt 0 on first deliveries
            return BoltResponse(status=200, body="", headers={"x-slack-no-retry": "1"})
        event_id = req.body.get("event_id") if isinstance(req.body, dict) else None
        if event_id and not engine.marks.claim_once(kind=EVENT_KIND, key=str(event_id), value={"at": time.time()}):
            return BoltResponse(status=200, body="")
        return next()

    @app.error
    def on_error(error: Exception, body: dict[str, Any], logger: logging.Logger) -> None:
        error_id = uuid.uuid4().hex[:8]
        log.error("unhandled Slack error %s: %r", error_id, error, exc_info=error)

    commands.register(app, engine, surface=surface)
    actions.register(app, engine, surface=surface)
    events.register(app, engine, surface=surface)
    return app, surface
