"""The `softswitch` command line: `serve [--config FILE]`.

Parses arguments, loads and validates the config (one clear error line and exit code 2 when it is unusable),
configures logging and hands over to the daemon. Nothing else lives here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from .config import ConfigError, load_config
from .daemon import Daemon
from .logs import add_secret, configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="softswitch", description="Run Plivo-XML apps against real SIP.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon (embedded defaults when no --config)")
    serve.add_argument("--config", metavar="FILE", help="TOML config file merged over the embedded defaults")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-json", action="store_true", default=None, help="JSON logs even on a terminal")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2


def serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"softswitch: config error: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(args.log_level, json=args.log_json)
    for secret in config.secrets():
        add_secret(secret)
    try:
        asyncio.run(Daemon(config).run())
    except OSError as exc:  # e.g. the SIP port is taken
        print(f"softswitch: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
