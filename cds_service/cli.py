"""The ``hypermobility-cds`` command line.

``serve`` runs the service under gunicorn, the standard production WSGI server for Flask (a
pre-fork server: one crashed worker never takes the others down, and SIGTERM drains in-flight
requests). Other commands are for developers and live in ``cds_service.devtools``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

# glibc's mallopt() parameter for the most malloc arenas a process may create (<malloc.h>).
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def cap_malloc_arenas() -> bool:
    """Let glibc's malloc use at most :data:`MALLOC_ARENAS` arenas in this process and its
    workers; True if the cap was set.

    glibc gives each thread its own arena, up to eight per core, and an arena keeps the peak of
    whatever its threads allocated. Under the GIL the threads never allocate in parallel, so
    the extra arenas buy nothing and each worker thread that once handled a large chart kept its
    share of it: one worker's peak after a series of 10,000-resource calls was 128 to 133 MB
    uncapped and 118 to 125 MB with the cap. An operator's own ``MALLOC_ARENA_MAX`` (applied by
    glibc at startup) is left alone; other C libraries are left alone.
    """
    import ctypes
    import platform

    if "MALLOC_ARENA_MAX" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return ctypes.CDLL(None).mallopt(_M_ARENA_MAX, MALLOC_ARENAS) == 1
    except (OSError, AttributeError):
        return False


def _migrate_in_own_process() -> int:
    """Run `db upgrade` in a child process, so that the gunicorn master never imports alembic.

    Every worker is forked from the master and carries what it imported: migrating here would
    cost each worker about 10 MB for a library it never uses again. The app then only checks the
    revision (without alembic). The child reads the same environment (the database settings come
    only from there). Returns the command's exit status; all it prints goes to stderr.
    """
    import subprocess

    command = [sys.executable, "-m", "cds_service.cli", "db", "upgrade"]
    return subprocess.run(command, stdout=sys.stderr).returncode


def _serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from cds_service.api import server_refusals
    from cds_service.app import checked_configuration, create_app
    from cds_service.logs import configure_logging
    from cds_service.security.verifier import MAX_TOKEN_CHARS
    from cds_service.settings import Settings, SettingsError

    cap_malloc_arenas()  # before any thread starts; the workers inherit it
    configure_logging()
    if args.profile:
        os.environ["CDS_PROFILE"] = args.profile
    try:
        settings = Settings.from_env()
        if args.auth:
            settings = settings.with_overrides(auth=args.auth)
        if settings.profile == "development" and not os.environ.get("CDS_PUBLIC_BASE_URL"):
            # The JWT audience is the URL the client called: on a developer machine, this port.
            settings = settings.with_overrides(
                public_base_urls=tuple(
                    f"http://{host}:{args.port}" for host in ("localhost", "127.0.0.1")
                )
            )
        configuration = checked_configuration(settings)  # before the database is touched
        if settings.database_auto_migrate:
            migrated = _migrate_in_own_process()
            if migrated != 0:
                return migrated
            # Done: the app (and every worker forked from it) only checks the revision now.
            settings = settings.with_overrides(database_auto_migrate=False)
        app = create_app(settings, configuration)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2

    def _worker_exit(_server: Any, _worker: Any) -> None:
        # Write buffered served-card records and close this worker's database connections.
        app.extensions["cds"].store.close()

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", host_and_port(args.host, args.port))
            self.cfg.set("workers", args.workers)
            self.cfg.set("threads", args.threads)
            self.cfg.set("timeout", 30)
            self.cfg.set("graceful_timeout", 20)
            self.cfg.set("accesslog", None)
            # A header line may carry the longest bearer token the verifier reads (16 KiB), so
            # that one gets the verifier's 401, not gunicorn's 431 (api/server_refusals.py).
            self.cfg.set("limit_request_field_size", MAX_TOKEN_CHARS + 1024)
            self.cfg.set("worker_exit", _worker_exit)
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn >= 25 opens one control socket per user by default; several
                # instances on one host would fight over it, and we never use it.
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            return app

    print(
        f"hypermobility-cds ({settings.profile} profile, auth {settings.auth}) on "
        f"http://{host_and_port(args.host, args.port)}/cds-services",
        file=sys.stderr,
    )
    server_refusals.install()  # before the workers fork
    Server().run()
    return 0


def host_and_port(host: str, port: int) -> str:
    """``host:port`` as gunicorn's bind and a URL write it: an IPv6 address in brackets
    (``--host ::1`` gave gunicorn "::1:8000", which it refused)."""
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return f"{host}:{port}"
    return f"[{host}]:{port}"


def _whole_number(name: str, least: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type: settings.whole_number (0 workers served nothing, and 0 threads
    silently changed gunicorn's worker class)."""
    def parse(text: str) -> int:
        # Imported when a value is read, not when the parser is built: settings pulls in the
        # guidance models, and `--help` or a developer command should not pay for them.
        from cds_service.settings import SettingsError, whole_number

        try:
            return whole_number(text, name, least, most)
        except SettingsError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hypermobility-cds", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the CDS service under gunicorn")
    serve.add_argument("--host", default=os.environ.get("CDS_HOST", "127.0.0.1"))
    # String defaults: argparse converts them like arguments, so a bad CDS_PORT is refused with
    # a message naming it, not a traceback (and only by `serve`).
    serve.add_argument(
        "--port",
        type=_whole_number("--port / CDS_PORT", 1, 65535),
        default=os.environ.get("CDS_PORT", "8000"),
    )
    serve.add_argument(
        "--workers",
        type=_whole_number("--workers / CDS_WORKERS", 1),
        default=os.environ.get("CDS_WORKERS", "2"),
        help="gunicorn worker processes (default: CDS_WORKERS, else 2); they share the database",
    )
    serve.add_argument(
        "--threads",
        type=_whole_number("--threads / CDS_THREADS", 1),
        default=os.environ.get("CDS_THREADS", "4"),
    )
    serve.add_argument(
        "--profile",
        choices=("production", "development"),
        help="settings profile (default: CDS_PROFILE, else production)",
    )
    serve.add_argument("--auth", choices=("required", "off"), help="override CDS_AUTH")
    serve.set_defaults(func=_serve)

    listing = commands.add_parser("scenarios", help="list the fixture scenarios")
    listing.set_defaults(func=_scenarios)

    fire = commands.add_parser("fire", help="call the service like an EHR and print the cards")
    fire.add_argument("scenario", nargs="?", help="a scenario name (see `scenarios`)")
    fire.add_argument("--bundle", help="fire patient-view for the patient in this Bundle file")
    fire.add_argument("--patient", help="patient id in --bundle (if it holds several)")
    fire.add_argument("--hook", default="patient-view", help="hook for --bundle")
    fire.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    fire.add_argument(
        "--no-prefetch",
        action="store_true",
        help="send no prefetch; serve the patient from a local FHIR endpoint instead",
    )
    fire.add_argument("--json", action="store_true", help="print the raw JSON response")
    fire.set_defaults(func=_fire)

    db = commands.add_parser("db", help="database schema: upgrade to the newest, or show it")
    db.add_argument("action", choices=("upgrade", "current"))
    db.set_defaults(func=_db)

    loader = commands.add_parser(
        "load-fixtures", help="PUT the fixture patients into a FHIR server"
    )
    loader.add_argument("--fhir-server", required=True, help="FHIR R4 base URL")
    loader.add_argument("--patient", action="append", help="only this patient (repeatable)")
    loader.set_defaults(func=_load_fixtures)

    report = commands.add_parser(
        "feedback-report", help="acceptance and overrides per rule and service, from the database"
    )
    report.add_argument("--days", type=float, help="only the last N days")
    report.add_argument("--since", help="ISO date or time, inclusive")
    report.add_argument("--until", help="ISO date or time, exclusive")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.set_defaults(func=_feedback_report)
    return parser


def _feedback_report(args: argparse.Namespace) -> int:
    from cds_service.analytics import build_report, parse_instant
    from cds_service.settings import Settings, SettingsError
    from cds_service.storage.database import Database, DatabaseConfigError
    from cds_service.storage.feedback import FeedbackStore

    try:
        since, until = parse_instant(args.since), parse_instant(args.until)
    except ValueError:
        print("--since/--until must be ISO dates or times", file=sys.stderr)
        return 2
    if args.days is not None:
        since = datetime.now(UTC) - timedelta(days=args.days)
    try:
        store = FeedbackStore(Database(Settings.from_env().database_url), served_flush_s=0)
        report = build_report(store.served_rows(), store.feedback_rows(), since=since, until=until)
    except (SettingsError, DatabaseConfigError) as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), indent=2) if args.json else report.to_table(), end="")
    return 0


def _db(args: argparse.Namespace) -> int:
    """`db upgrade` is what startup runs (CDS_DATABASE_AUTO_MIGRATE); run it by hand when
    the service's database role may not change the schema."""
    from sqlalchemy.exc import SQLAlchemyError

    from cds_service.settings import Settings, SettingsError
    from cds_service.storage.database import Database, DatabaseConfigError, cannot_open

    try:
        database = Database(Settings.from_env().database_url)
        if args.action == "upgrade":
            database.upgrade()
        current, head = database.current_revision(), database.head_revision()
    except (SettingsError, DatabaseConfigError) as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except SQLAlchemyError as error:  # unreachable server, bad credentials, read-only file...
        print(f"configuration error: {cannot_open(database, error)}", file=sys.stderr)
        return 2
    state = "up to date" if current == head else f"needs upgrade to {head}"
    print(f"{database!r}: revision {current or 'none'} ({state})")
    return 0 if args.action == "current" or current == head else 1


def _scenarios(args: argparse.Namespace) -> int:
    from cds_service.devtools.scenarios import list_scenarios, load_scenario

    for name in list_scenarios():
        scenario = load_scenario(name)
        expected = ", ".join(sorted(scenario.expected_cards)) or "no cards"
        print(f"{name:55} {scenario.hook:13} {expected}")
    return 0


def _fire(args: argparse.Namespace) -> int:
    from cds_service.devtools.fire import FireError, fire, load, print_cards, scenario_from_bundle

    try:
        if args.bundle:
            scenario = scenario_from_bundle(args.bundle, args.hook, args.patient)
        elif args.scenario:
            scenario = load(args.scenario)
        else:
            print("name a scenario (see `hypermobility-cds scenarios`) or --bundle",
                  file=sys.stderr)
            return 2
        exchange = fire(scenario, base_url=args.url, prefetch=not args.no_prefetch)
    except FireError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(exchange.body, indent=2))
    else:
        print_cards(exchange, colour=sys.stdout.isatty())
    return 0 if exchange.status == 200 else 1


def _load_fixtures(args: argparse.Namespace) -> int:
    from cds_service.devtools.load_fixtures import LoadError, load_fixtures

    try:
        loaded = load_fixtures(args.fhir_server, patients=args.patient)
    except LoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for item in loaded:
        print(f"wrote {item.resources:3} resources for Patient/{item.patient_id}")
    print(f"{len(loaded)} patients, {sum(i.resources for i in loaded)} resources")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `hypermobility-cds scenarios | head`: the reader left, not an error
        # Point stdout at devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
