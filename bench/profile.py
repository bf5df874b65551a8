"""Where the engine's CPU goes per call: `python -m bench.profile [--rate 100] [--seconds 20] [--out DIR]`.

Runs one engine (the same setup as `python -m bench`: webhook app, 401-challenging SIPp trunk, SIPp caller) at a fixed
rate under py-spy (`--gil`: only the thread holding the GIL is sampled, i.e. Python CPU time), and writes
- `profile.txt`: the engine's CPU per call, the share of each layer (every sample is charged to the innermost frame
  that belongs to a layer: SIP stack, HTTP client, store, media, XML, logging, other engine code), and the top
  functions by self and by inclusive time;
- `profile.raw`: py-spy's collapsed stacks (flamegraph.pl / speedscope can draw them).
Needs `pip install py-spy` (root, or ptrace allowed).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .load import run_step
from .procs import ROOT
from .subjects import EngineOptions, Engines

LAYERS = (
    ("logging", ("structlog/", "/logging/__init__", "engine/logs.py")),
    ("HTTP client (webhooks)", ("/httpx", "aiohttp/", "engine/webhooks.py", "engine/signature.py", "multidict",
                                "yarl/")),
    ("store (SQLite thread hops)", ("engine/store.py", "sqlite3", "concurrent/futures", "/threading.py")),
    ("XML", ("engine/xml.py", "engine/verbs/base.py", "engine/verbs/registry.py", "lxml")),
    ("media (RTP, SDP)", ("media/",)),
    ("SIP stack", ("sip/",)),
    ("engine (calls, dial, interpreter)", ("engine/",)),
)


def layer_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, keys in LAYERS:
            if any(k in frame for k in keys):
                return name
    return "asyncio loop / other"


def summarise(raw: Path, calls: int, cpu_s: float, top: int = 30) -> str:
    layers: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        layers[layer_of(frames)] += n
        own[_short(frames[-1])] += n
        for f in {_short(f) for f in frames}:
            incl[f] += n
    if not total:
        return "no samples"
    per_call = 1000 * cpu_s / calls if calls else 0.0
    out = [f"engine CPU: {cpu_s:.2f} s for {calls} calls = {per_call:.2f} ms per call "
           f"({total} samples with the GIL held)", "", "per layer (ms per call, share):"]
    for name, n in layers.most_common():
        out.append(f"  {per_call * n / total:6.3f} ms  {100 * n / total:5.1f} %  {name}")
    out += ["", f"top {top} functions by self time:"]
    for name, n in own.most_common(top):
        out.append(f"  {100 * n / total:5.1f} %  {name}")
    out += ["", f"top {2 * top} functions by inclusive time:"]
    for name, n in incl.most_common(2 * top):
        out.append(f"  {100 * n / total:5.1f} %  {name}")
    return "\n".join(out) + "\n"


def _short(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (to/file.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if where else name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--uvloop", action="store_true")
    ap.add_argument("--sample-rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "profile")
    args = ap.parse_args(argv)
    if shutil.which("py-spy") is None:
        print("py-spy not found (pip install py-spy)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    subject = Engines(args.out / "run", 1, EngineOptions(log_level=args.log_level, uvloop=args.uvloop))
    (args.out / "run").mkdir(parents=True, exist_ok=True)
    subject.start()
    try:
        run_step(subject, args.rate, 2.0)  # warm-up
        engine = subject.engines[0]
        raw = args.out / "profile.raw"
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(engine.proc.pid), "--gil",
                                "--rate", str(args.sample_rate), "--format", "raw", "--output", str(raw),
                                "--duration", str(int(args.seconds + 30))],
                               stdout=subprocess.DEVNULL, stderr=(args.out / "py-spy.log").open("wb"))
        time.sleep(1.0)
        step = run_step(subject, args.rate, args.seconds, cpu_pids=subject.engine_pids())
        spy.send_signal(2)  # SIGINT: py-spy writes what it has
        spy.wait(30)
    finally:
        subject.stop()
    text = f"{step.line()}\n\n" + summarise(raw, step.calls, step.cpu_s)
    (args.out / "profile.txt").write_text(text)
    print(f"wrote {args.out / 'profile.txt'} and {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
