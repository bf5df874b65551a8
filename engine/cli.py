"""The `softswitch` command line: `serve [--config FILE] [--drain-timeout SECONDS]`;
`check-xml FILE|URL...` (the XML linter) and `demo` (the seed examples end to end, engine.demo).

Parses arguments, loads and validates the config (one clear error line and exit code 2 when it is unusable),
configures logging and hands over to the daemon (serve), the XML validator (check-xml) or engine.demo (demo).
Nothing else lives here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError, load_config
from .daemon import DEFAULT_DRAIN_TIMEOUT, Daemon
from .logs import add_secret, configure_logging

if TYPE_CHECKING:
    from .xml import XmlError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="softswitch", description="Run Plivo-XML apps against real SIP.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon (embedded defaults when no --config)")
    serve.add_argument("--config", metavar="FILE", help="TOML config file merged over the embedded defaults")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-json", action="store_true", default=None, help="JSON logs even on a terminal")
    serve.add_argument("--drain-timeout", type=_seconds, default=DEFAULT_DRAIN_TIMEOUT, metavar="SECONDS",
                       help="on SIGTERM, refuse new calls and let live ones finish for up to this long before "
                            f"hanging them up (default {DEFAULT_DRAIN_TIMEOUT:g}; 0: hang up at once)")
    check_cmd = sub.add_parser(
        "check-xml", help="validate Plivo XML documents (files, URLs or - for stdin)",
        description="Validate each document with the engine's own validator and print every error with its line, "
                    "element and attribute. Exit 0: all valid; 1: some document is invalid; 2: some document could "
                    "not be read or fetched.")
    check_cmd.add_argument("targets", nargs="+", metavar="FILE|URL", help="a file, an http(s):// URL, or - (stdin)")
    check_cmd.add_argument("--method", default="GET", type=str.upper, choices=["GET", "POST"],
                           help="HTTP method for URLs (default GET; answer URLs often want POST)")
    check_cmd.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                           help="a parameter sent with the request (query for GET, form for POST); repeatable")
    check_cmd.add_argument("--timeout", type=_positive_seconds, default=10.0, metavar="SECONDS",
                           help="per URL (default 10)")
    check_cmd.add_argument("--json", action="store_true", help="one JSON report on stdout instead of text lines")
    demo_cmd = sub.add_parser(
        "demo", help="run the seed examples end to end on loopback and print each call",
        description="Start the engine, the bundled example app, simulated trunks and a simulated caller per example "
                    "on free loopback ports; print every call's timeline and checks. Exit 0 only if every example "
                    "behaved as expected.")
    demo_cmd.add_argument("--only", nargs="+", metavar="SEED", help="run only these examples (e.g. 2 5 4-open)")
    demo_cmd.add_argument("--log-level", default="error", choices=["debug", "info", "warning", "error"],
                          help="engine logs on stderr (default error)")
    demo_cmd.add_argument("--json", action="store_true", help="also print a JSON summary line at the end")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "check-xml":
        return check_xml(args)
    if args.command == "demo":
        return demo(args)
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
        asyncio.run(Daemon(config, drain_timeout=args.drain_timeout).run())
    except OSError as exc:  # e.g. the SIP port is taken
        print(f"softswitch: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


# -- check-xml ---------------------------------------------------------------------------------------------------------
def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


class _Unreadable(Exception):
    """A document that could not be read or fetched (exit code 2)."""


def check_xml(args: argparse.Namespace) -> int:
    """Lint each target: `TARGET:LINE[:COL]: <Element> attribute 'x': what is wrong` per error; 0/1/2."""
    from .xml import parse_document, validate_document

    params: dict[str, str] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"softswitch check-xml: --param needs KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        params[key] = value
    worst = 0
    reports: list[dict[str, object]] = []
    for target in args.targets:
        try:
            data, source_url = _read_document(target, args.method, params, args.timeout)
        except _Unreadable as exc:
            worst = 2
            reports.append({"target": target, "valid": False, "unreadable": str(exc), "errors": []})
            if not args.json:
                print(f"{target}: cannot check: {exc}", file=sys.stderr)
            continue
        errors = validate_document(data, source_url=source_url)
        if errors:
            worst = max(worst, 1)
        elements = 0 if errors else len(parse_document(data, source_url=source_url).verbs)
        reports.append({"target": target, "valid": not errors, "elements": elements, "errors": [
            {"line": e.line, "column": e.column, "element": e.element, "attribute": e.attribute, "detail": e.detail}
            for e in errors]})
        if args.json:
            continue
        for e in errors:
            print(_format_error(target, e))
        if errors:
            print(f"{target}: {len(errors)} error{'s' if len(errors) != 1 else ''}")
        else:
            print(f"{target}: valid ({elements} element{'s' if elements != 1 else ''})")
    if args.json:
        print(json.dumps(reports, indent=2))
    return worst


def _format_error(target: str, error: XmlError) -> str:
    where = target
    if error.line:
        where += f":{error.line}"
        if error.column:
            where += f":{error.column}"
    what = []
    if error.element:
        what.append(f"<{error.element}>")
    if error.attribute:
        what.append(f"attribute {error.attribute!r}")
    return f"{where}: {' '.join(what) + ': ' if what else ''}{error.detail}"


def _read_document(target: str, method: str, params: dict[str, str], timeout: float) -> tuple[bytes, str]:
    """(bytes, base URL for relative URLs) of a file, a URL or stdin."""
    if target == "-":
        return sys.stdin.buffer.read(), ""
    if target.lower().startswith(("http://", "https://")):
        import httpx

        try:
            if method == "GET":
                response = httpx.get(target, params=params or None, timeout=timeout, follow_redirects=True)
            else:
                response = httpx.post(target, data=params, timeout=timeout, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise _Unreadable(f"{method} failed: {exc or type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise _Unreadable(f"{method} answered HTTP {response.status_code} {response.reason_phrase}")
        return response.content, str(response.url)
    try:
        return Path(target).read_bytes(), ""
    except OSError as exc:
        raise _Unreadable(exc.strerror or str(exc)) from None


# -- demo --------------------------------------------------------------------------------------------------------------
def demo(args: argparse.Namespace) -> int:
    """The seed examples end to end (engine.demo); 0 only if every example behaved as expected."""
    from .demo import run_demo

    configure_logging(args.log_level)
    try:
        return run_demo(args.only, json_out=args.json)
    except OSError as exc:
        print(f"softswitch demo: cannot start: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
