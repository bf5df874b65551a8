"""Benchmark (not a test) for media/bridge.py + media/session.py: bridged calls in one process, and per-call media cost.

Ramp (default): for each N, N calls of two RtpSessions each (real sockets from a PortAllocator) are set up the way
engine/dialing.py does it - the A leg answers a caller's offer, the B leg offers and accepts the trunk's answer - and
bridged with `media.bridge.Bridge`. The far end of every leg is bench/rtpmeter.c (the same meter `python -m bench`
uses, in its own process): it answers each stream with 50 G.711 packets/s from the same port, so each leg carries
RTP both ways and the engine side receives and sends 100 packets/s per leg. Call starts are spread over 20 ms.
After a warm-up we report: this process's CPU (% of one core) and CPU µs per packet handled (sent + received), the
meter's lost and late (> 50 ms transit jitter) packets as a % of those expected, and the sessions' own send lateness.

Setup (--setup N): the media part of N Dial-flow calls (the 488 pre-check, A and B sessions opened, SDP as the
engine does it, 300 ms of ringback on A, 100 ms bridged, closed), with RTP to a sink that never reads as in
`python -m bench`'s load steps: µs of CPU per call, with the synchronous part (no ticks) on its own.

Run:  python3 bench/bridge_media.py --ramp 200,300,400,500,600 --seconds 10
      python3 bench/bridge_media.py --no-ramp --setup 1000 --rate 100
      python3 bench/bridge_media.py --loop uvloop
This script must not be collected as a test and must not change media/ behaviour (it only drives public APIs).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import socket
import sys
import time
from array import array
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import RtpMeter  # noqa: E402
from bench.media import QuietLog  # noqa: E402
from bench.procs import cpu_seconds  # noqa: E402
from media import sdp  # noqa: E402
from media.bridge import Bridge  # noqa: E402
from media.ports import PortAllocator  # noqa: E402
from media.session import RtpSession, histogram_percentile  # noqa: E402
from media.sources import ringback_us  # noqa: E402

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
GC_FREEZE = False


class Meter(RtpMeter):
    """bench/rtpmeter.c on two ports (A: callers' media, B: trunks' media), and its own CPU time."""

    def cpu_seconds(self) -> float:
        return cpu_seconds([self.popen.pid])


async def open_call(allocator: PortAllocator, meter: Meter) -> tuple[RtpSession, RtpSession]:
    """Two sessions negotiated as in the Dial flow (A answers the caller, B's offer is answered by the trunk)."""
    a = await RtpSession.open(allocator, HOST, HOST)
    b = await RtpSession.open(allocator, HOST, HOST)
    a.log = b.log = QuietLog()
    return a, b


def negotiate(a: RtpSession, b: RtpSession, caller_offer: str, port_b: int) -> None:
    a.answer(caller_offer)
    trunk_answer, _ = sdp.build_answer(b.local_sdp_offer(), HOST, port_b, supported=("PCMU",))
    b.accept_answer(trunk_answer)


async def run_round(n: int, meter: Meter, allocator: PortAllocator, seconds: float, warmup: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    caller_offer = sdp.build_offer(HOST, meter.port_a, codecs=("PCMU", "PCMA"))
    calls = [await open_call(allocator, meter) for _ in range(n)]
    bridges: list[Bridge] = []
    start = loop.time() + 0.05
    started = loop.create_future()

    def begin(i: int) -> None:
        a, b = calls[i]
        negotiate(a, b, caller_offer, meter.port_b)
        bridge = Bridge(a, b)
        bridge.start()
        bridges.append(bridge)
        if len(bridges) == n and not started.done():
            started.set_result(None)

    for i in range(n):
        loop.call_at(start + 0.020 * i / n, begin, i)
    await started
    if GC_FREEZE:
        gc.collect()
        gc.freeze()
    await asyncio.sleep(warmup)
    sessions = [s for c in calls for s in c]
    for s in sessions:
        s.stats.reset_timing()
    meter.lines()
    sent0 = sum(s.stats.packets_sent for s in sessions)
    recv0 = sum(s.stats.packets_received for s in sessions)
    cpu0, wall0, mcpu0 = time.process_time(), loop.time(), meter.cpu_seconds()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(seconds)
    cpu1, wall1, mcpu1 = time.process_time(), loop.time(), meter.cpu_seconds()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    sent = sum(s.stats.packets_sent for s in sessions) - sent0
    received = sum(s.stats.packets_received for s in sessions) - recv0
    late_sends = sum(s.stats.late_sends for s in sessions)
    hist = [sum(col) for col in zip(*(s.stats.lateness_hist for s in sessions), strict=True)]
    worst = max(s.stats.max_lateness for s in sessions)
    await asyncio.sleep(1.1)  # the meter's report covering the end of the window
    lines = meter.lines()[:-1] or [{}]
    window = lines[: max(1, int(seconds))]
    expected = sum(x.get("expected", 0) for x in window)
    lost = sum(x.get("lost", 0) for x in window)
    late = sum(x.get("late", 0) for x in window)
    streams = window[-1].get("a_streams", 0) + window[-1].get("b_streams", 0)
    for bridge in bridges:
        bridge.stop()
    for s in sessions:
        s.close()
    await asyncio.sleep(1.3)  # the meter forgets streams silent for 1 s
    meter.lines()
    cpu, wall = cpu1 - cpu0, wall1 - wall0
    handled = sent + received
    return {
        "n": n, "streams": int(streams), "expected_pkts": 2 * n * 2 * 50 * wall, "handled": handled,
        "cpu_pct": 100 * cpu / wall, "us_per_packet": 1e6 * cpu / max(handled, 1),
        "user_us": 1e6 * (ru1.ru_utime - ru0.ru_utime) / max(handled, 1),
        "sys_us": 1e6 * (ru1.ru_stime - ru0.ru_stime) / max(handled, 1),
        "bad_pct": 100 * (lost + late) / max(expected, 1), "lost": int(lost), "late": int(late),
        "late_sends_pct": 100 * late_sends / max(sent, 1), "max_late_ms": 1000 * worst,
        "meter_cpu_pct": 100 * (mcpu1 - mcpu0) / wall,
        "p50_ms": 1000 * histogram_percentile(array("I", hist), 0.5),
        "p99_ms": 1000 * histogram_percentile(array("I", hist), 0.99),
    }


async def ramp(args: argparse.Namespace) -> None:
    meter = Meter(ROOT / "var" / "bench")
    try:
        allocator = PortAllocator(args.port_min, args.port_max)
        print(f"loop: {args.loop}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
              f"{args.seconds:g} s per step after {args.warmup:g} s warm-up")
        print(f"{'calls':>6} {'streams':>7} {'handled':>9} {'CPU':>7} {'us/pkt':>7} {'user':>5} {'sys':>5} "
              f"{'lost+late':>10} {'lost':>6} {'late':>6} {'sends>5ms':>9} {'p50':>6} {'p99':>6} {'max':>7}"
              f" {'meter':>6}")
        best = 0
        for n in args.ramp:
            r = await run_round(n, meter, allocator, args.seconds, args.warmup)
            ok = r["bad_pct"] < 1.0 and r["handled"] >= 0.95 * r["expected_pkts"]
            print(f"{r['n']:>6} {r['streams']:>7} {r['handled']:>9} {r['cpu_pct']:>6.1f}% {r['us_per_packet']:>7.2f} "
                  f"{r['user_us']:>5.2f} {r['sys_us']:>5.2f} "
                  f"{r['bad_pct']:>9.3f}% {r['lost']:>6} {r['late']:>6} {r['late_sends_pct']:>8.3f}% "
                  f"{r['p50_ms']:>4.1f}ms {r['p99_ms']:>4.1f}ms {r['max_late_ms']:>5.1f}ms "
                  f"{r['meter_cpu_pct']:>5.1f}%" + ("" if ok else "  (not clean)"),
                  flush=True)
            if ok:
                best = max(best, n)
        print(f"\nmax bridged calls with < 1% lost/late: {best or 'not reached'}")
    finally:
        meter.stop()


async def setup_cost(args: argparse.Namespace) -> None:
    """CPU per call of the media layer in the Dial flow, as `python -m bench`'s load steps run it: RTP goes to a sink
    that never reads (nothing comes back), `--setup` calls started at `--rate` per second, each: the 488 pre-check,
    A and B sessions opened, A answers the caller (183) and plays ringback for 300 ms, B's offer is answered by the
    trunk, A answers again (200), a bridge for 100 ms, both closed. Also the synchronous part alone (no ticks)."""
    loop = asyncio.get_running_loop()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sink.bind((HOST, 0))
    port = sink.getsockname()[1]
    allocator = PortAllocator(args.port_min, args.port_max)
    serial = [0]

    def caller_offer() -> str:  # every call has its own offer (o= id, port), as real callers do
        serial[0] += 1
        return sdp.build_offer(HOST, port, codecs=("PCMU", "PCMA"), session_id=str(10**9 + serial[0]),
                               username="caller")

    async def call(offer: str, ring: float, bridged: float) -> None:
        sdp.build_answer(offer, HOST, 9)  # engine.py: the 488 pre-check before opening the session
        a = await RtpSession.open(allocator, HOST, HOST)
        b = await RtpSession.open(allocator, HOST, HOST)
        a.log = b.log = QuietLog()
        a.answer(offer)  # 183 with SDP
        a.play(ringback_us())
        trunk_answer, _ = sdp.build_answer(b.local_sdp_offer(), HOST, port, supported=("PCMU",),
                                           session_id=str(serial[0]), username="trunk")
        if ring:
            await asyncio.sleep(ring)
        b.accept_answer(trunk_answer)
        a.answer(offer)  # the 200 re-uses it
        bridge = Bridge(a, b)
        bridge.start()
        if bridged:
            await asyncio.sleep(bridged)
        bridge.stop()
        b.close()
        a.close()

    for _ in range(50):
        await call(caller_offer(), 0, 0)
    best = float("inf")
    for _ in range(args.rounds):
        offers = [caller_offer() for _ in range(args.setup)]
        gc.collect()
        cpu0 = time.process_time()
        for offer in offers:
            await call(offer, 0, 0)
        best = min(best, (time.process_time() - cpu0) / args.setup)
    print(f"synchronous media work per call (2 sessions open/close, SDP as the engine does it, no ticks): "
          f"{best * 1e6:.1f} us CPU (best of {args.rounds} x {args.setup})")
    best = float("inf")
    for _ in range(args.rounds):
        offers = [caller_offer() for _ in range(args.setup)]
        tasks: list[asyncio.Task[None]] = []
        gc.collect()
        cpu0, t0 = time.process_time(), loop.time()
        for i, offer in enumerate(offers):
            delay = t0 + i / args.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(call(offer, 0.3, 0.1)))
        await asyncio.gather(*tasks)
        best = min(best, (time.process_time() - cpu0) / args.setup)
    print(f"per call with media (300 ms ringback + 100 ms bridged, both legs sending to a dead sink, "
          f"{args.rate:g} calls/s): {best * 1e6:.1f} us CPU (best of {args.rounds} x {args.setup})")
    sink.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ramp", type=lambda s: [int(x) for x in s.split(",")], default=[200, 300, 400, 500, 600])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--no-ramp", action="store_true")
    ap.add_argument("--setup", type=int, default=0, help="also measure the per-call media cost over this many calls")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=100.0, help="calls per second in the --setup run with media")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    ap.add_argument("--port-min", type=int, default=24000)
    ap.add_argument("--port-max", type=int, default=31999)
    ap.add_argument("--gc-freeze", action="store_true", help="gc.freeze() once the calls are set up")
    args = ap.parse_args(argv)
    global GC_FREEZE
    GC_FREEZE = args.gc_freeze
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 8 * max(args.ramp) + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))
    if args.loop == "uvloop":
        import uvloop  # type: ignore[import-not-found]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def run() -> None:
        if not args.no_ramp:
            await ramp(args)
        if args.setup:
            await setup_cost(args)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
