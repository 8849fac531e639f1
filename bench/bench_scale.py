"""How does drbot's cost grow with work? (`python bench/bench_scale.py [--quick]`)

A restore that runs all day reports progress every few seconds, and a bad week leaves a thousand incidents open:
what one more event, one more command or one export costs must not grow with what is already stored. Three
measures, through drbot's real objects (the `Engine` that `bot.wiring.build_engine` builds over a SQLite file in
a temp dir, sandbox config; DBOS is not started, as nothing measured here runs a workflow):

(a) One incident receiving 50,000 events. At its 100th, 10,000th and 50,000th event: the cost per event of
    `engine.emit` (append, then publish to a counting notifier, so the figure is the engine's), the best of five
    timed batches of 200; and two domain writes that publish what they stored — a checklist tick (`engine.press`) and
    `/dr incident detected` (`engine.handle`). Goal: flat, the 50,000th within 1.2x the 100th.
(b) 1,000 open incidents with a run each (and the incident of (a) in the same database): `/dr status` for one
    incident, and the Slack notifier's work for one new event of an incident whose thread exists (from `notify`
    until its worker is idle again: the thread post, the run card's `chat.update`), against the fake Slack Web API
    in a process of its own (as `bench_ack.py` serves it). 50 incidents spread over the 1,000 are sampled, each
    warmed up first (its thread, checklist and card posted). Goal: < 100 ms, p50 and max.
(c) Export of the incident of (a), grown to 100,000 events, as md, json and csv (`engine.export_text`): each format
    in a fresh process over the same database file, so its peak RSS counts the export and not the filling.
    Goal: < 2 s and < 300 MB each.

Filling: the events that are not timed are written by the store's own `write_event` (the function every append
goes through: the timeline clamp, the audit chain), 1,000 to a transaction, which leaves the same rows as one
`append` each in a fraction of the time (one commit, not a thousand): 0.6 ms an event, a minute for the 100,000.
The whole script takes 80-120 s on two cores; `--quick` runs every part at small sizes (for the test that checks
it prints every figure). It exits non-zero only if something crashes: a missed goal is information for a person,
not a CI gate.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import sqlalchemy as sa  # noqa: E402
from bench_ack import TOKEN, Served  # noqa: E402
from rss import peak_rss_mb  # noqa: E402

from bot.config import SANDBOX_CONFIG, Settings, build_config  # noqa: E402
from bot.wiring import build_engine  # noqa: E402
from runbooks.engine import Engine, Reply  # noqa: E402
from runbooks.models import Event, RunStatus, StepRun, StepStatus  # noqa: E402
from runbooks.store import Store  # noqa: E402
from runbooks.store.events import write_event  # noqa: E402
from runbooks.store.tables import events  # noqa: E402

FLAT_GOAL = 1.2  # x: the cost at the last point over the cost at the first
LATENCY_GOAL_MS = 100.0
EXPORT_GOAL_S = 2.0
RSS_GOAL_MB = 300.0
FORMATS = ("md", "json", "csv")
CHANNEL = "C0SCALE"
FILL_BATCH = 1000  # untimed events per write transaction


@dataclass(frozen=True)
class Sizes:
    points: tuple[int, ...]  # (a): the event counts at which the costs are timed, first and last compared
    batch: int  # (a): events per timed batch
    rounds: int  # (a): timed batches per point; the best counts
    writes: int  # (a): samples of each domain write per point; the best counts
    incidents: int  # (b)
    samples: int  # (b)
    export_events: int  # (c)


FULL = Sizes(points=(100, 10_000, 50_000), batch=200, rounds=5, writes=3, incidents=1000, samples=50,
             export_events=100_000)
QUICK = Sizes(points=(20, 200, 1000), batch=20, rounds=1, writes=1, incidents=20, samples=5, export_events=2000)


class Counter:
    """A notifier that only counts: what (a) times is the engine's part of publishing."""

    def __init__(self) -> None:
        self.count = 0

    def notify(self, event: Event) -> None:
        self.count += 1


def build(db: Path, *, notifiers: tuple[Counter, ...] = ()) -> Engine:
    """The engine as `bot.wiring` builds it, over `db`, with the sandbox config; not started (no DBOS)."""
    settings = Settings(drbot_database_url=f"sqlite:///{db}", drbot_sandbox_speed=1e5)
    return build_engine(settings=settings, config=build_config(copy.deepcopy(SANDBOX_CONFIG), source="bench"),
                        notifiers=notifiers)


def progress(incident_id: str, run_id: str, n: int) -> Event:
    """A restore's progress line, with what exports must escape (a pipe, quotes, a comma)."""
    return Event(incident_id=incident_id, run_id=run_id, at=datetime.now(UTC), actor="drbot", kind="step.progress",
                 text=f'poll {n}: restore "creating", 42% | eta 3m, next poll in 10s',
                 data={"n": n, "status": "creating", "percent": 42})


def event_count(store: Store, incident_id: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(events)
                                .where(events.c.incident_id == incident_id)).scalar_one())


def fill(store: Store, *, incident_id: str, run_id: str, upto: int) -> None:
    """Untimed: write progress events until the incident has `upto`, `FILL_BATCH` to a transaction."""
    have = event_count(store, incident_id)
    while have < upto:
        with store.tx() as conn:
            for n in range(have, min(upto, have + FILL_BATCH)):
                write_event(conn, progress(incident_id, run_id, n), dedupe_key=None)
        have = min(upto, have + FILL_BATCH)


def timed(action: Callable[[], object]) -> float:
    """Seconds `action` took."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def start_run(engine: Engine, incident_id: str) -> str:
    """A run in progress (stored as the engine stores one, without a workflow): what the events are about."""
    now = datetime.now(UTC)
    run = engine.store.create_run(incident_id=incident_id, runbook="database-pitr", environment="prod",
                                  command="/dr restore database prod 10:00Z", requested_by="alice",
                                  requested_at=now, params={"at": "10:00Z"})
    engine.store.update_run(run.id, status=RunStatus.RUNNING)
    engine.store.save_step(StepRun(run_id=run.id, step_id="restore", title="Restore to a new instance",
                                   status=StepStatus.RUNNING, started_at=now))
    return run.id


def open_incident(engine: Engine, title: str) -> str:
    reply = engine.handle(command=engine.parse(f"incident open {title} sev1 prod"), actor="alice")
    return expect(reply, "incident open")


def expect(reply: Reply, what: str) -> str:
    """The reply's incident id; a refusal (which names none) means the benchmark is broken, not slow."""
    if reply.incident_id is None:
        raise RuntimeError(f"{what} was refused: {reply.text}")
    return reply.incident_id


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}" if seconds < 0.1 else f"{seconds * 1000:.0f}"


# ------------------------------------------------------------------------------------- (a) one long incident


def one_long_incident(engine: Engine, counter: Counter, sizes: Sizes) -> tuple[str, str]:
    """(a); returns the incident and its run, for (c)."""
    incident_id = open_incident(engine, "day-long restore")
    run_id = start_run(engine, incident_id)
    items = iter([i.item_id for i in engine.queries.checklist(incident_id=incident_id)])
    detected = engine.parse("incident detected 20m ago")
    emitted = 0
    costs: dict[str, dict[int, float]] = {"emit": {}, "tick": {}, "detected": {}}

    def published(action: Callable[[], Reply], what: str) -> Callable[[], None]:
        def run() -> None:
            before = counter.count
            expect(action(), what)
            if counter.count != before + 1:
                raise RuntimeError(f"{what} published {counter.count - before} events, not 1")
        return run

    def tick() -> Reply:
        return engine.press(action="tick", value=f"{incident_id}:{next(items)}", actor="bob")

    def detect() -> Reply:
        return engine.handle(command=detected, actor="bob", incident_id=incident_id)

    def batch() -> None:
        nonlocal emitted
        for _ in range(sizes.batch):
            emitted += 1
            engine.emit(progress(incident_id, run_id, emitted), dedupe_key=f"{incident_id}:bench:{emitted}")

    for point in sizes.points:
        fill(engine.store, incident_id=incident_id, run_id=run_id, upto=point - 1)
        costs["tick"][point] = min(timed(published(tick, "checklist tick")) for _ in range(sizes.writes))
        costs["detected"][point] = min(timed(published(detect, "incident detected")) for _ in range(sizes.writes))
        costs["emit"][point] = min(timed(batch) for _ in range(sizes.rounds)) / sizes.batch
        print(f"at event {point:,}: emit (append + publish) {ms(costs['emit'][point])} ms/event, checklist tick "
              f"{ms(costs['tick'][point])} ms, incident detected {ms(costs['detected'][point])} ms", flush=True)
    if counter.count < emitted:
        raise RuntimeError(f"{emitted} events emitted, {counter.count} published")
    first, last = sizes.points[0], sizes.points[-1]
    for middle in sizes.points[1:-1]:
        print(f"emit cost per event, event {middle:,} vs {first:,}: "
              f"{costs['emit'][middle] / costs['emit'][first]:.2f} x (goal < {FLAT_GOAL} x)")
    for key, label in (("emit", "emit cost per event"), ("tick", "checklist tick cost"),
                       ("detected", "incident detected cost")):
        print(f"{label}, event {last:,} vs {first:,}: {costs[key][last] / costs[key][first]:.2f} x "
              f"(goal < {FLAT_GOAL} x)")
    return incident_id, run_id


# ------------------------------------------------------------------------------------- (b) many open incidents


def percentiles(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), max(samples)


def many_incidents(engine: Engine, sizes: Sizes, tmp: Path) -> None:
    from slack_sdk import WebClient

    from bot.slack.notifier import SlackNotifier

    started = time.perf_counter()
    incidents = []
    for n in range(sizes.incidents):
        incident_id = open_incident(engine, f"service {n} down")
        incidents.append((incident_id, start_run(engine, incident_id)))
    print(f"{sizes.incidents:,} open incidents with a run each made in {time.perf_counter() - started:.1f} s",
          flush=True)
    step = max(1, len(incidents) // sizes.samples)
    sampled = incidents[step - 1::step][:sizes.samples]

    status = engine.parse("status")
    took = []
    for incident_id, _ in sampled:
        started = time.perf_counter()
        reply = engine.handle(command=status, actor="bob", incident_id=incident_id)
        took.append(time.perf_counter() - started)
        expect(reply, "/dr status")
    p50, worst = percentiles(took)
    print(f"/dr status with {sizes.incidents:,} open incidents p50: {ms(p50)} ms (goal < {LATENCY_GOAL_MS:.0f} ms)")
    print(f"/dr status with {sizes.incidents:,} open incidents max: {ms(worst)} ms (goal < {LATENCY_GOAL_MS:.0f} ms)")

    fake = Served.start("fake", tmp=tmp)
    notifier = SlackNotifier(engine=engine, client=WebClient(token=TOKEN, base_url=fake.address),
                             default_channel=CHANNEL, catch_up=False)
    try:
        def notice(incident_id: str, run_id: str, n: int) -> Event:
            stored = engine.store.append(Event(incident_id=incident_id, run_id=run_id, at=datetime.now(UTC),
                                               actor="drbot", kind="run.notice",
                                               text=f"restore {n}: 42% copied, eta 3m"))
            assert stored is not None
            return stored

        def process(event: Event) -> float:
            """From `notify` until the worker is idle: `drain()` polls every 10 ms, too coarse for this figure."""
            started = time.perf_counter()
            notifier.notify(event)
            if not notifier._idle.wait(timeout=60):
                raise RuntimeError(f"the notifier did not finish event {event.seq} in 60 s")
            return time.perf_counter() - started

        for incident_id, run_id in sampled:  # warm-up: the thread, checklist and run card are posted
            process(engine.queries.events_for(incident_id=incident_id)[0])
            process(notice(incident_id, run_id, 0))
        took = [process(notice(incident_id, run_id, 1)) for incident_id, run_id in sampled]
    finally:
        notifier.close()
        fake.stop()
    p50, worst = percentiles(took)
    print(f"Slack notifier per event with {sizes.incidents:,} open incidents p50: {ms(p50)} ms "
          f"(goal < {LATENCY_GOAL_MS:.0f} ms)")
    print(f"Slack notifier per event with {sizes.incidents:,} open incidents max: {ms(worst)} ms "
          f"(goal < {LATENCY_GOAL_MS:.0f} ms)")


# ------------------------------------------------------------------------------------- (c) a big export


def export_child(db: Path, incident_id: str, fmt: str) -> None:
    """In a fresh interpreter: one export, then its seconds and this process's peak RSS as one JSON line."""
    engine = build(db)
    before = peak_rss_mb()
    seconds = timed(lambda: engine.export_text(incident_id=incident_id, fmt=fmt))
    print(json.dumps({"seconds": seconds, "before_mb": before, "peak_mb": peak_rss_mb()}))


def big_export(engine: Engine, sizes: Sizes, *, db: Path, incident_id: str, run_id: str) -> None:
    fill(engine.store, incident_id=incident_id, run_id=run_id, upto=sizes.export_events)
    count = event_count(engine.store, incident_id)
    for fmt in FORMATS:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--export", str(db), incident_id,
                               fmt], check=True, capture_output=True, text=True)
        found = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"export {count:,} events {fmt}: {found['seconds']:.2f} s (goal < {EXPORT_GOAL_S:.0f} s)")
        print(f"export {count:,} events {fmt} peak RSS: {found['peak_mb']:.0f} MB (goal < {RSS_GOAL_MB:.0f} MB); "
              f"{found['before_mb']:.0f} MB before the export (imports, engine)", flush=True)


# ------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the script, measures little")
    parser.add_argument("--export", nargs=3, metavar=("DB", "INCIDENT", "FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export:
        db, incident_id, fmt = args.export
        export_child(Path(db), incident_id, fmt)
        return 0

    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="drbot-bench-scale-") as tmp:
        db = Path(tmp) / "drbot.db"
        counter = Counter()
        engine = build(db, notifiers=(counter,))
        try:
            print(f"(a) one incident; costs timed when it has {', '.join(f'{p:,}' for p in sizes.points)} events",
                  flush=True)
            incident_id, run_id = one_long_incident(engine, counter, sizes)
            print(f"(c) export of that incident grown to {sizes.export_events:,} events", flush=True)
            big_export(engine, sizes, db=db, incident_id=incident_id, run_id=run_id)
            print(f"(b) {sizes.incidents:,} open incidents with a run each", flush=True)
            many_incidents(engine, sizes, Path(tmp))
        finally:
            engine.close()
    print(f"({time.perf_counter() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
