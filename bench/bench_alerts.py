"""An alert storm: how many PagerDuty webhooks per second does drbot take, and is anything lost?
(`python bench/bench_alerts.py [--webhooks 1000] [--incidents 300]`)

When a shared dependency falls over, PagerDuty fires for every service at once and redelivers whatever it did not
see acknowledged. drbot must open each incident (and its Slack thread) exactly once, whatever the order, and keep
up. This sends 1,000 signed V3 webhooks — 300 distinct incidents; the rest are redeliveries of the same events
and follow-ups (acknowledged, annotated, escalated, priority changes), all shuffled, so follow-ups often arrive
before their trigger — from 20 concurrent clients to drbot served as `drbot serve` serves it (uvicorn, Starlette,
SQLite, the front storing each alert and a worker process posting the threads), with the fake Slack Web API in a
process of its own. It prints the throughput, then waits for the threads to be posted and checks: exactly 300
incidents, 300 Slack threads, every distinct event applied once. It exits non-zero if anything was lost or
doubled (that is a bug); a missed throughput goal is only reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ack import SECRET as SLACK_SECRET  # noqa: E402
from bench_ack import TOKEN, Served, exchange  # noqa: E402

PD_SECRET = "whsec-bench-0123456789"
CHANNEL = "C0STORM"
CLIENTS = 20
GOAL = 200.0  # webhooks per second
FOLLOW_UPS = ("incident.acknowledged", "incident.annotated", "incident.escalated", "incident.priority_updated",
              "incident.reassigned")


# ------------------------------------------------------------------------------------------- the served app


def serve(tmp: Path, slack_url: str) -> int:
    """drbot as `drbot serve` runs it over HTTP (front + worker process), with PagerDuty webhooks on, until told
    to stop; `count` prints what it holds as JSON."""
    import os

    import uvicorn
    import yaml

    from bot.config import Settings
    from bot.serve import build_front
    from tests.slack_harness import free_port, slack_config

    config = slack_config()
    config["pagerduty"] = {"services": {"PSVC1": {"channel": CHANNEL, "environment": "prod",
                                                  "runbooks": ["database-pitr"]}}}
    path = tmp / "drbot.yml"
    path.write_text(yaml.safe_dump(config))
    os.environ.update({"DRBOT_DATABASE_URL": f"sqlite:///{tmp / 'drbot.db'}", "DRBOT_CONFIG": str(path),
                       "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SLACK_SECRET, "SLACK_API_URL": slack_url,
                       "PAGERDUTY_WEBHOOK_SECRETS": PD_SECRET})  # the worker process reads them
    front = build_front(settings=Settings(), config_path=path)
    store = front.surface.engine.store
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(front.asgi, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    print(f"ready {port}", flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "settle":
                ok = front.worker.settle(timeout=300)
                print("settled" if ok else "failed: the worker did not settle in 300 s", flush=True)
            elif line.strip() == "count":
                incidents = store.list_incidents()
                events = [e for i in incidents for e in store.events_for(incident_id=i.id)
                          if e.kind.startswith("pagerduty.")]
                threads = sum(1 for i in incidents if isinstance(i.external.get("slack"), dict))
                print("count " + json.dumps({
                    "incidents": len(incidents), "threads": threads,
                    "pd_ids": len({i.external["pagerduty"]["id"] for i in incidents}),
                    "pd_events": len({e.data.get("pagerduty_event") for e in events}),
                    "pd_event_rows": len(events),
                    "parked": len(store.list_state(kind="pagerduty.parked"))}), flush=True)
            elif line.strip() == "stop":
                break
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        front.close()
    return 0


# ------------------------------------------------------------------------------------------------ the load


def storm(*, webhooks: int, incidents: int, seed: int = 7) -> tuple[list[bytes], int]:
    """Signed bodies, shuffled; and how many distinct events there are."""
    from tests.doubles import pagerduty_webhooks as pdw

    rng = random.Random(seed)
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    distinct: list[dict[str, Any]] = []
    for n in range(incidents):
        inc = pdw.incident(incident_id=f"QSTORM{n:05d}", number=n + 1, created_at=t0, title=f"storm alert {n}")
        distinct.append(pdw.event("incident.triggered", of=inc, occurred_at=t0, event_id=str(uuid.uuid4())))
    follow_ups = (webhooks - incidents) // 2
    for k in range(follow_ups):
        inc = distinct[rng.randrange(incidents)]["event"]["data"]
        distinct.append(pdw.event(rng.choice(FOLLOW_UPS), of=inc, occurred_at=t0 + timedelta(seconds=k + 1),
                                  event_id=str(uuid.uuid4())))
    deliveries = list(distinct)
    while len(deliveries) < webhooks:  # redeliveries: the same bytes again
        deliveries.append(rng.choice(distinct))
    rng.shuffle(deliveries)
    return [pdw.body(d) for d in deliveries], len(distinct)


def http_request(port: int, body: bytes) -> bytes:
    from tests.doubles import pagerduty_webhooks as pdw

    headers = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json", "Content-Length": str(len(body)),
               pdw.SIGNATURE_HEADER: pdw.sign(body, [PD_SECRET])}
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST /pagerduty/webhook HTTP/1.1\r\n{head}\r\n".encode() + body


async def send_all(port: int, bodies: list[bytes]) -> tuple[float, dict[int, int], list[float]]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    statuses: dict[int, int] = {}
    latencies: list[float] = []

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                status, _ = await exchange(reader, writer, http_request(port, body))
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return time.perf_counter() - started, statuses, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhooks", type=int, default=1000)
    parser.add_argument("--incidents", type=int, default=300)
    parser.add_argument("--serve", default="", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", default="", help=argparse.SUPPRESS)
    parser.add_argument("--slack-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(Path(args.tmp), args.slack_url)

    bodies, distinct = storm(webhooks=args.webhooks, incidents=args.incidents)
    with tempfile.TemporaryDirectory() as tmp:
        fake = Served.start("fake", tmp=Path(tmp))
        drbot = Served.start("drbot", tmp=Path(tmp), slack_url=fake.address, script=Path(__file__).resolve())
        try:
            seconds, statuses, latencies = asyncio.run(send_all(drbot.port, bodies))
            drbot.tell("settle")
            drbot.expect("settled")
            drbot.tell("count")
            counts = json.loads(drbot.expect("count").split(" ", 1)[1])
        finally:
            drbot.stop()
            fake.stop()
    latencies.sort()
    rate = len(bodies) / seconds
    print(f"{len(bodies)} webhooks ({args.incidents} incidents, {distinct} distinct events, "
          f"{len(bodies) - distinct} redeliveries) from {CLIENTS} clients in {seconds:.2f} s; statuses {statuses}")
    print(f"webhook latency p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms")
    print(f"incidents {counts['incidents']}, Slack threads {counts['threads']}, distinct PagerDuty events applied "
          f"{counts['pd_events']} (rows {counts['pd_event_rows']}), parked {counts['parked']}")
    print(f"alert storm throughput: {rate:.0f} webhooks/s (goal > {GOAL:.0f} webhooks/s)")
    problems = []
    if statuses != {202: len(bodies)}:
        problems.append(f"not every webhook was accepted: {statuses}")
    if counts["incidents"] != args.incidents or counts["pd_ids"] != args.incidents:
        problems.append(f"expected {args.incidents} incidents, got {counts['incidents']}")
    if counts["threads"] != args.incidents:
        problems.append(f"expected {args.incidents} Slack threads, got {counts['threads']}")
    if counts["pd_events"] != distinct or counts["pd_event_rows"] != distinct:
        problems.append(f"expected each of {distinct} events applied once, got {counts['pd_event_rows']} rows "
                        f"for {counts['pd_events']} events")
    for problem in problems:
        print(f"LOST OR DOUBLED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
