"""`drbot` command line. Imports stay inside the commands so that `drbot --help` is fast."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.config import DrbotConfig, Settings
    from runbooks.catalog import Catalog
    from runbooks.engine import Engine


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drbot", description="drbot runs disaster-recovery runbooks from chat, "
                                     "with a two-person rule and an RTO/RPO timeline.")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    shell = sub.add_parser("shell", help="chat with drbot offline (sandbox clouds unless drbot.yml says otherwise)")
    shell.add_argument("--user", default="alice", help="who you are at the start (default: alice)")
    shell.add_argument("--config", type=Path, help="drbot.yml to use (default: $DRBOT_CONFIG, ./drbot.yml, "
                       "else the built-in sandbox config)")
    serve = sub.add_parser("serve", help="serve Slack (Socket Mode with SLACK_APP_TOKEN, else HTTP)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--config", type=Path)
    export = sub.add_parser("export", help="export an incident's timeline")
    export.add_argument("incident", help="INC-n or latest")
    export.add_argument("--format", choices=["md", "json", "csv"], default="md")
    export.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    rto = sub.add_parser("rto", help="the recovery-time table: RTO targets against measured drills and runs")
    rto.add_argument("--format", choices=["md", "json", "csv"], default="md")
    rpo = sub.add_parser("rpo", help="the RPO table: each store's newest recovery point read now, against its "
                         "target; exit code 1 when a store is over its target")
    rpo.add_argument("--format", choices=["md", "json", "csv"], default="md")
    drills = sub.add_parser("drills", help="drill tools")
    drills_sub = drills.add_subparsers(dest="drills_cmd", metavar="SUBCOMMAND")
    leaks = drills_sub.add_parser("leaks", help="drill resources still present past their TTL (drills.ttl, default "
                                  "6h); exit code 1 when there are any")
    leaks.add_argument("--format", choices=["text", "json"], default="text")
    check = sub.add_parser("check", help="check the configuration, the runbooks and every configured resource")
    check.add_argument("--config", type=Path)
    audit = sub.add_parser("audit", help="audit trail tools")
    audit_sub = audit.add_subparsers(dest="audit_cmd", metavar="SUBCOMMAND")
    audit_sub.add_parser("verify", help="verify the audit hash chain; names the first row that does not match")
    return parser


def configure_logging() -> None:
    """One format for every drbot process (the serve worker calls this too)."""
    from bot.logs import configure

    configure()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging()
    if args.cmd is None:
        parser.print_help()
        return 2
    import os

    # Every file drbot creates — the SQLite databases and their -wal/-shm files, DBOS's checkpoints, the shell's
    # log, exports — holds incident data or the audit trail: readable by its owner only (0600).
    os.umask(0o077)
    from runbooks.errors import DrbotError
    from runbooks.redact import redact_text

    try:
        if args.cmd == "shell":
            return _leave(_shell(args))
        if args.cmd == "serve":
            return _leave(_serve(args))
        if args.cmd == "export":
            return _export(args)
        if args.cmd == "rto":
            return _rto(args)
        if args.cmd == "rpo":
            return _rpo(args)
        if args.cmd == "drills":
            if args.drills_cmd != "leaks":
                parser.parse_args(["drills", "--help"])
            return _drill_leaks(args)
        if args.cmd == "check":
            return _check(args)
        if args.cmd == "audit":
            if args.audit_cmd != "verify":
                parser.parse_args(["audit", "--help"])
            return _audit_verify()
    except DrbotError as exc:
        print(f"drbot: {redact_text(exc.message)}", file=sys.stderr)
        return 2
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError):  # the database is down or refuses us: one line to act on, no traceback
            first = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
            print(f"drbot: cannot use the database {redact_text(_settings().drbot_database_url)}: "
                  f"{redact_text(first)}", file=sys.stderr)
            return 1
        from runbooks.faults import contain  # a bug: logged once (masked) with the id the line below shows

        print(f"drbot: {contain(exc, where=f'drbot {args.cmd}').text}", file=sys.stderr)
        return 1
    return 2


def _leave(code: int) -> int:
    """Exit now, without waiting for engine threads that are parked waiting for people. Everything that matters
    is already checkpointed (that is what the kill -9 test proves), so nothing is lost by not joining them."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _settings() -> Settings:
    from bot.config import Settings

    return Settings()


def _shell(args: argparse.Namespace) -> int:
    from bot.config import load_config, resolve_config_path
    from bot.logs import send_tracebacks_to
    from bot.shell.repl import main as shell_main
    from bot.wiring import build_engine, start_engine

    settings = _settings()
    config = load_config(resolve_config_path(settings, explicit=args.config))
    engine = build_engine(settings=settings, config=config)

    def start() -> None:
        start_engine(engine, settings=settings)
        send_tracebacks_to(_shell_log(settings.drbot_database_url))

    try:
        return shell_main(engine, user=args.user, start=start)
    finally:
        engine.stop()


def _shell_log(database_url: str) -> Path:
    """`drbot-shell.log` beside a SQLite database (where the shell's state is), else in the working directory."""
    prefix, _, path = database_url.partition(":///")
    folder = Path(path).parent if prefix.startswith("sqlite") and path and path != ":memory:" else Path(".")
    return folder / "drbot-shell.log"


def _serve(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings.slack_bot_token is None or (settings.slack_signing_secret is None and settings.slack_app_token is None):
        print("drbot serve needs Slack credentials: SLACK_BOT_TOKEN plus SLACK_SIGNING_SECRET (HTTP) or "
              "SLACK_APP_TOKEN (Socket Mode). To try drbot without Slack, run `drbot shell`.", file=sys.stderr)
        return 2
    from bot.config import load_config, resolve_config_path

    config_path = resolve_config_path(settings, explicit=args.config)
    load_config(config_path)  # a bad drbot.yml is refused here, before any process starts
    from bot.replica import replica_id, serving_alone

    replica = replica_id(settings)
    from bot.logs import name_replica

    name_replica(replica)
    with serving_alone(settings, replica=replica):  # one SQLite database, one drbot serve
        return _serve_front(args, settings=settings, config_path=config_path, replica=replica)


def _serve_front(args: argparse.Namespace, *, settings: Settings, config_path: Path | None, replica: str) -> int:
    """The front (HTTP, or Socket Mode plus /healthz and /metrics over HTTP) and its worker (`bot.serve`)."""
    import contextlib
    import signal

    import uvicorn

    from bot.http import server_config
    from bot.serve import build_front

    front = build_front(settings=settings, config_path=config_path, replica=replica)
    server = uvicorn.Server(server_config(front.asgi, host=args.host, port=args.port))
    socket_mode = None
    try:
        if settings.slack_app_token is not None:
            from bot.slack.socket_mode import open_socket_mode

            socket_mode = open_socket_mode(front.bolt_app, app_token=settings.slack_app_token.get_secret_value())
            print(f"drbot serving Slack over Socket Mode as replica {replica} (worker process "
                  f"{front.worker.process.pid}); /healthz and /metrics on {args.host}:{args.port}", file=sys.stderr)
        else:
            print(f"drbot serving Slack on http://{args.host}:{args.port}/slack/events as replica {replica} "
                  f"(worker process {front.worker.process.pid})", file=sys.stderr)
        # uvicorn stops gracefully on SIGTERM, then raises it again under the handler it found: make that one
        # a no-op, so the hand-over below (the worker stops DBOS and releases the leadership) always runs.
        signal.signal(signal.SIGTERM, lambda *_: None)
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it stopped on
            server.run()
    finally:
        if socket_mode is not None:
            socket_mode.close()  # first: a socket left open could swallow events meant for another replica
        front.close()
    return 0 if server.started else 3  # 3: uvicorn's "could not start" (the port is taken…), said above


def _export(args: argparse.Namespace) -> int:
    from runbooks.errors import NotFound
    from runbooks.redact import redact_text

    settings = _settings()
    engine = _offline_engine()
    incident = engine.queries.get_incident(args.incident)
    if incident is None:
        known = ", ".join(i.id for i in engine.queries.list_incidents()[-10:]) or "none"
        raise NotFound(f"There is no incident {args.incident!r} in {redact_text(settings.drbot_database_url)} "
                       f"(recent: {known}). Use INC-n or latest.")
    text = engine.export_text(incident_id=incident.id, fmt=args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output} ({incident.id}, {args.format})", file=sys.stderr)
    return 0


def _rto(args: argparse.Namespace) -> int:
    sys.stdout.write(_offline_engine().recovery_times.text(args.format))
    return 0


def _rpo(args: argparse.Namespace) -> int:
    from runbooks.rpo import rpo_table

    readings = _offline_engine().rpo.read()
    sys.stdout.write(rpo_table(readings, args.format))
    return 1 if any(r.state == "breach" for r in readings) else 0


def _drill_leaks(args: argparse.Namespace) -> int:
    from runbooks.drills import leaks_text

    engine = _offline_engine()
    ttl = engine.settings.drills.ttl
    found = engine.queries.drill_leaks(now=engine.clock.now(), ttl=ttl)
    sys.stdout.write(leaks_text(found, ttl=ttl, fmt=args.format))
    return 1 if found else 0


def _offline_engine() -> Engine:
    """An engine for reading only (exports): on DRBOT_DATABASE_URL, no DBOS, no providers started."""
    from bot.config import load_config, resolve_config_path
    from bot.wiring import build_engine

    settings = _settings()
    return build_engine(settings=settings, config=load_config(resolve_config_path(settings)))


def _check(args: argparse.Namespace) -> int:
    from bot.config import load_config, resolve_config_path
    from bot.wiring import ProviderRegistry, open_store
    from runbooks.catalog import load_catalog
    from runbooks.errors import DrbotError
    from runbooks.ports import SystemClock

    settings = _settings()
    problems = 0
    config = load_config(resolve_config_path(settings, explicit=args.config))
    print(f"OK   config: {config.source} ({len(config.environments)} environments)")
    catalog = load_catalog()
    print(f"OK   runbooks: {len(catalog.runbooks)} loaded, checklist with "
          f"{sum(len(p.items) for p in catalog.checklist.phases)} items")
    store = open_store(settings)
    registry = ProviderRegistry(state=store, clock=SystemClock(), speed=settings.drbot_sandbox_speed)
    actions: dict[str, dict[str, frozenset[str]]] = {}
    for env in config.environments.values():
        actions[env.name] = {}
        for name, resource in env.resources.items():
            try:
                provider = registry(environment=env.name, resource=name, config=resource.model_dump())
                actions[env.name][name] = provider.actions()
                found = provider.probe()
            except DrbotError as exc:
                found = [exc.message]
            problems += len(found)
            for problem in found:
                print(f"FAIL {env.name}.{name}: {problem}")
            if not found:
                print(f"OK   {env.name}.{name}: {provider.kind} reachable: {_probed(name, resource.settings())}")
    problems += _check_runbooks(config, catalog, actions)
    for service, route in config.pagerduty_services.items():
        unknown = [r for r in route.runbooks if r not in catalog.runbooks]
        problems += len(unknown)
        for name in unknown:
            close = difflib.get_close_matches(name, list(catalog.runbooks), n=1)
            print(f"FAIL pagerduty.services.{service}.runbooks: no runbook {name!r}"
                  + (f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(catalog.runbooks))})"))
        if not unknown:
            print(f"OK   pagerduty.services.{service}: alerts open incidents in {route.environment}"
                  + (f", thread in {route.channel}" if route.channel else ""))
    problems += _check_schedules(config, catalog)
    if config.pagerduty_services and settings.pagerduty_webhook_secrets is None:
        print("NOTE PAGERDUTY_WEBHOOK_SECRETS is not set: `drbot serve` will not accept PagerDuty webhooks until it is")
    return 1 if problems else 0


def _check_schedules(config: DrbotConfig, catalog: Catalog) -> int:
    """Each schedule's drill can run: the runbook exists, can be drilled, and its environment has what it reads."""
    from runbooks import readiness
    from runbooks.drills import drill_variant
    from runbooks.errors import DrbotError

    failures = 0
    for name, schedule in config.schedules.items():
        where = f"schedules.{name}"
        try:
            runbook = drill_variant(catalog.get(schedule.runbook))
        except DrbotError as exc:
            print(f"FAIL {where}: {exc.message}")
            failures += 1
            continue
        env = config.environments[schedule.environment]
        gaps = [gap for gap in readiness.gaps(runbook, env) if not gap.optional]
        for gap in gaps:
            print(f"FAIL {where}: {gap.sentence()}")
        failures += len(gaps)
        if not gaps:
            print(f"OK   {where}: drills {schedule.runbook} on {schedule.environment} at `{schedule.cron}` (UTC)")
    return failures


def _probed(resource: str, settings: Mapping[str, Any]) -> str:
    """What the probe of a resource looked at, from its drbot.yml block, so an OK line names the thing that
    answered (a reachable cloud account with the wrong instance name is not OK)."""

    def said(*pairs: tuple[str, str]) -> list[str]:
        return [f"{label} {settings[key]}" for label, key in pairs if settings.get(key) not in (None, "")]

    if resource == "database":
        where = said(("in", "region"), ("in project", "project"), ("in resource group", "resource_group"))
        text = " ".join([*said(("instance", "instance")), *where[:1]]) or "database"
        replica = settings.get("replica")
        if isinstance(replica, Mapping) and replica.get("instance"):
            text += f", replica {replica['instance']}" + (f" in {replica['region']}" if replica.get("region") else "")
        return text
    if resource == "pagerduty":
        return "PagerDuty incidents"
    pairs = {"dns": [("zone", "zone_id"), ("record", "record")],
             "kubernetes": [("context", "context"), ("namespace", "namespace"), ("deployment", "deployment")],
             "vectors": [("collection", "collection")],
             "objects": [("bucket", "bucket")]}.get(resource, [])
    text = ", ".join(said(*pairs)) or resource
    return text + (f" at {settings['url']}" if resource == "vectors" and settings.get("url") else "")


def _check_runbooks(config: DrbotConfig, catalog: Catalog, actions: Mapping[str, Mapping[str, frozenset[str]]]) -> int:
    """Every runbook in every environment that has its resources: FAIL for what a run would die on, WARN for
    steps an absent optional setting skips, OK when every step can run. Runbooks an environment has no resource
    for are one SKIP line per environment (staging without Kubernetes is normal), unless a PagerDuty service
    suggests the runbook there: then an alert would suggest a command that is refused, so it is a FAIL.
    Returns the number of FAIL lines."""
    from runbooks import readiness

    failures = 0
    for env in config.environments.values():
        unavailable: dict[tuple[str, ...], list[str]] = {}
        for runbook in catalog.runbooks.values():
            lacking = tuple(sorted(readiness.runbook_resources(runbook) - set(env.resources)))
            routes = [f"pagerduty.services.{sid}" for sid, route in config.pagerduty_services.items()
                      if route.environment == env.name and runbook.name in route.runbooks]
            if lacking and not routes:
                unavailable.setdefault(lacking, []).append(runbook.name)
                continue
            blocks = {f"environments.{env.name}.{resource}" for resource in lacking}
            gaps = readiness.gaps(runbook, env)
            for gap in gaps:
                if gap.optional:
                    print(f"WARN {gap.sentence()}")
                    continue
                failures += 1
                verb = "suggests" if len(routes) == 1 else "suggest"
                suggested = f"; {' and '.join(routes)} {verb} it for {env.name}" if gap.path in blocks else ""
                print(f"FAIL {gap.sentence()}{suggested}")
            missing_actions = readiness.action_gaps(runbook, env, actions.get(env.name, {}))
            failures += len(missing_actions)
            for sentence in missing_actions:
                print(f"FAIL {sentence}")
            if not gaps and not missing_actions:
                print(f"OK   {env.name} · {runbook.name}: every step can run")
        if unavailable:
            print(f"SKIP {env.name}: " + "; ".join(
                f"{_and(names)} need{'s' if len(names) == 1 else ''} {' and '.join(lacking)}"
                for lacking, names in unavailable.items()))
    return failures


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _audit_verify() -> int:
    from bot.wiring import open_store

    settings = _settings()
    store = open_store(settings)
    count, problem = store.verify_audit()
    if problem is None:
        seq, digest = store.audit_head()
        print(f"audit chain OK: {count} rows verified; head row {seq} hash {digest}")
        return 0
    print(f"audit chain BROKEN at row {problem.seq}: {problem.reason}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
