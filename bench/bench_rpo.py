"""The RPO monitor's cost: one scan over 200 configured stores on the real AWS providers, against moto server behind
a proxy that adds a realistic API latency to every request.

How: a moto server holds 100 RDS instances (7-day backups) and 100 versioned S3 buckets; 100 environments each
configure one `aws-rds` database and one `s3` bucket (200 stores). A small threaded HTTP proxy in front of moto
sleeps `--latency` (default 120 ms: a regional AWS API call) before forwarding each request and counts them. The
scan is `RpoMonitor.read()` — what the leader's tick does every `rpo.check_every` — with the production provider
registry; it is timed once warm (clients built) and once cold (every provider and boto3 client built inside the
scan, as after a restart).

Figures: wall time of a scan (goal < 30 s, cold and warm) and API calls per store (goal ≤ 2: `< 2.01`).
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import socketserver
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config import Settings, build_config  # noqa: E402
from bot.wiring import ProviderRegistry  # noqa: E402
from runbooks.ports import SystemClock  # noqa: E402
from runbooks.rpo import RpoMonitor  # noqa: E402
from runbooks.settings import EngineSettings  # noqa: E402
from runbooks.store import Store  # noqa: E402
from tests.doubles.moto_server import REGION, free_port, moto_server  # noqa: E402

ENVIRONMENTS = 100  # × (database + objects) = 200 stores


class Proxy:
    """Forwards every request to `upstream` after `latency` seconds; counts requests."""

    def __init__(self, upstream: str, latency: float) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.count = 0
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                with lock:
                    outer.count += 1
                time.sleep(latency)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                conn.request(self.command, self.path, body=body,
                             headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.port = free_port()
        self.server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()


def main() -> int:
    import os

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")  # moto accepts any; the providers use the standard chain
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.12, help="seconds added to every API request")
    args = parser.parse_args()
    with moto_server() as moto:
        rds, s3 = moto.client("rds"), moto.client("s3")
        started = time.monotonic()
        for n in range(ENVIRONMENTS):
            rds.create_db_instance(DBInstanceIdentifier=f"db-{n}", Engine="postgres", DBInstanceClass="db.t4g.micro",
                                   MasterUsername="app", MasterUserPassword="not-a-secret-1", AllocatedStorage=20,
                                   BackupRetentionPeriod=7)
            s3.create_bucket(Bucket=f"bucket-{n}")
            s3.put_bucket_versioning(Bucket=f"bucket-{n}", VersioningConfiguration={"Status": "Enabled"})
        print(f"seeded {ENVIRONMENTS} RDS instances and {ENVIRONMENTS} buckets in {time.monotonic() - started:.1f} s")
        proxy = Proxy(moto.url, args.latency)
        aws = {"region": REGION, "endpoint_url": proxy.url}
        data = {"tiers": {"critical": {"rpo": "15m", "rto": "1h"}}, "environments": {
            f"env-{n}": {"tier": "critical",
                         "database": {"provider": "aws-rds", "instance": f"db-{n}", **aws},
                         "objects": {"provider": "s3", "bucket": f"bucket-{n}", **aws}}
            for n in range(ENVIRONMENTS)}}
        config = build_config(data, source="bench")
        tmp = Path(__import__("tempfile").mkdtemp())
        store = Store(f"sqlite:///{tmp / 'bench.db'}")
        settings = Settings(drbot_database_url=f"sqlite:///{tmp / 'bench.db'}")
        engine_settings = EngineSettings(environments=config.environments, tiers=config.tiers)
        results = {}
        for label in ("cold", "warm"):
            if label == "cold":
                registry = ProviderRegistry(state=store, clock=SystemClock(), speed=settings.drbot_sandbox_speed)
            monitor = RpoMonitor(settings=engine_settings, providers=registry, state=store, clock=SystemClock(),
                                 announce=lambda key, text: None)
            before = proxy.count
            began = time.monotonic()
            readings = monitor.read()
            took = time.monotonic() - began
            calls = proxy.count - before
            states = {r.state for r in readings}
            assert len(readings) == 2 * ENVIRONMENTS and states == {"ok"}, \
                (states, [r.sentence() for r in readings if r.state != "ok"][:3])
            results[label] = (took, calls / len(readings))
            print(f"{label} scan: {len(readings)} stores, {calls} API calls, {took:.2f} s "
                  f"({datetime.now(UTC):%H:%M:%SZ})")
        proxy.close()
        store.close()
    print(f"RPO scan of 200 stores, cold (latency {args.latency * 1000:.0f} ms): {results['cold'][0]:.2f} s "
          f"(goal < 30 s)")
    print(f"RPO scan of 200 stores, warm: {results['warm'][0]:.2f} s (goal < 30 s)")
    print(f"RPO scan API calls per store: {results['warm'][1]:.2f} calls (goal < 2.01 calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
