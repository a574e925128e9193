"""The ``hypermobility-cds`` command line.

``serve`` runs the service under gunicorn, the standard production WSGI server for Flask (a
pre-fork server: one crashed worker never takes the others down, and SIGTERM drains in-flight
requests). Other commands are for developers and live in ``cds_service.devtools``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any


def _serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from cds_service import create_app
    from cds_service.logs import configure_logging
    from cds_service.settings import Settings, SettingsError

    configure_logging()
    if args.profile:
        os.environ["CDS_PROFILE"] = args.profile
    try:
        settings = Settings.from_env()
        if args.auth:
            settings = settings.with_overrides(auth=args.auth)
        app = create_app(settings)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("threads", args.threads)
            self.cfg.set("timeout", 30)
            self.cfg.set("graceful_timeout", 20)
            self.cfg.set("accesslog", None)

        def load(self) -> Any:
            return app

    print(
        f"hypermobility-cds ({settings.profile} profile, auth {settings.auth}) on "
        f"http://{args.host}:{args.port}/cds-services",
        file=sys.stderr,
    )
    Server().run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hypermobility-cds", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the CDS service under gunicorn")
    serve.add_argument("--host", default=os.environ.get("CDS_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("CDS_PORT", "8000")))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("CDS_WORKERS", "2")))
    serve.add_argument("--threads", type=int, default=int(os.environ.get("CDS_THREADS", "4")))
    serve.add_argument(
        "--profile",
        choices=("production", "development"),
        help="settings profile (default: CDS_PROFILE, else production)",
    )
    serve.add_argument("--auth", choices=("required", "off"), help="override CDS_AUTH")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
