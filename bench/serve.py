"""`softswitch serve` with what the benchmark compares: `python -m bench.serve [--uvloop] [--no-gc-freeze]
[--gc-threshold G0 G1 G2] serve ...`.

--uvloop runs the daemon on uvloop's event loop (not a softswitch dependency: `pip install uvloop`);
--no-gc-freeze skips the daemon's gc.freeze() after start (engine/daemon.py), to measure what it brings;
--gc-threshold sets gc.set_threshold() before anything else. Everything else is engine.cli's own `serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys

from engine import cli


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uvloop", action="store_true")
    ap.add_argument("--no-gc-freeze", action="store_true", help="skip the daemon's gc.freeze() after start")
    ap.add_argument("--gc-threshold", type=int, nargs=3, metavar=("GEN0", "GEN1", "GEN2"),
                    help="gc.set_threshold() at start (CPython's default: 700 10 10)")
    args, rest = ap.parse_known_args(argv)
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.gc_threshold:
        gc.set_threshold(*args.gc_threshold)
    if args.no_gc_freeze:
        gc.freeze = lambda: None  # this process only: the daemon's call after start does nothing
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main())
