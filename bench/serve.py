"""`softswitch serve` with what the benchmark compares: `python -m bench.serve [--uvloop] [--no-gc-freeze]
[--gc-threshold G0 G1 G2] serve ...`.

--uvloop runs the daemon on uvloop's event loop (not a softswitch dependency: `pip install uvloop`);
--no-gc-freeze skips the daemon's gc.freeze() after start (engine/daemon.py), to measure what it brings;
--gc-threshold sets gc.set_threshold() before anything else; with SOFTSWITCH_BENCH_GC_LOG=FILE every collection of
5 ms or more is logged to FILE. Everything else is engine.cli's own `serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import sys
import time
from collections import deque

from engine import cli


def _log_gc_pauses(path: str) -> None:
    out = open(path, "a", buffering=1)  # noqa: SIM115 - for the life of the process
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        pause = time.perf_counter() - started[0]
        if pause >= 0.005:
            out.write(f"{time.time():.3f} gen{info['generation']} {1000 * pause:.1f} ms "
                      f"collected {info['collected']} tracked {len(gc.get_objects())}\n")
            if info["generation"] == 2 and pause >= 0.02:  # what the full collection had to walk
                objects = gc.get_objects()
                kinds = collections.Counter(type(o).__name__ for o in objects)
                sizes = collections.Counter()
                for o in objects:
                    if isinstance(o, (list, dict, deque)):
                        sizes[type(o).__name__] += len(o)
                out.write(f"  types {kinds.most_common(15)}\n  container items {dict(sizes)}\n")
                held = collections.Counter(
                    f"{type(o).__name__} {getattr(getattr(o, '__func__', o), '__qualname__', '?')}"
                    for o in objects if type(o).__name__ in ("method", "function", "coroutine"))
                out.write(f"  methods/functions/coroutines {held.most_common(25)}\n")

    gc.callbacks.append(on_gc)


def _census_on_signal(path: str) -> None:
    """SIGUSR1: write which objects the collector tracks, each container named by what holds it (type of the
    object that refers to it), to `path`: what a full collection has to walk, per live call."""
    import signal

    def census(*_: object) -> None:
        objects = gc.get_objects()
        kinds = collections.Counter(type(o).__name__ for o in objects)
        wanted = {id(o): o for o in objects if type(o).__name__ in _CONTAINERS}
        owners: collections.Counter[str] = collections.Counter()
        examples: dict[str, str] = {}
        seen: set[int] = set()
        for holder in objects:
            for ref in gc.get_referents(holder):
                if id(ref) in wanted and id(ref) not in seen:
                    seen.add(id(ref))
                    name = getattr(getattr(ref, "__func__", None), "__qualname__", "")
                    key = f"{type(ref).__name__} {name} <- {_describe(holder)}"
                    owners[key] += 1
                    if key not in examples:
                        examples[key] = repr(ref)[:100]
        with open(path, "a") as out:
            out.write(f"{time.time():.3f} tracked {len(objects)}\n  types {kinds.most_common(30)}\n")
            for key, n in owners.most_common(80):
                out.write(f"  {n:6d} {key}    e.g. {examples[key]}\n")

    signal.signal(signal.SIGUSR1, census)


_CONTAINERS = {"list", "tuple", "dict", "deque", "cell", "method", "builtin_function_or_method", "Context",
               "function", "Future", "ReferenceType", "set"}


def _describe(holder: object) -> str:
    kind = type(holder).__name__
    if kind == "coroutine":
        return f"coroutine {getattr(holder, '__qualname__', '?')}"
    if kind == "function":
        return f"function {getattr(holder, '__qualname__', '?')}"
    if kind == "method":
        return f"method {getattr(getattr(holder, '__func__', None), '__qualname__', '?')}"
    return kind


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
    gc_log = os.environ.get("SOFTSWITCH_BENCH_GC_LOG")
    if gc_log:  # every collection of 5 ms or more: when, which generation, how long, objects tracked
        _log_gc_pauses(gc_log)
        _census_on_signal(gc_log + ".census")
    if args.no_gc_freeze:
        gc.freeze = lambda: None  # this process only: the daemon's call after start does nothing
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main())
