"""Benchmark (not a test) for media/session.py: how many paced RTP streams one process sustains, and schedule drift.

Ramp: for each N, N RtpSessions (real sockets from a PortAllocator, SDP answered, phases spread over the 20 ms grid
like calls arriving at random times) each play an endless PCMU-encoded tone to a sink in a separate process. After a
warm-up we measure: sends more than 5 ms behind schedule (%), p99 / max lateness, CPU of the sending process (% of
one core), CPU µs per packet, and how many packets the sink saw. With --echo the sink sends every packet back, so
each session also receives, parses, decodes and re-chunks 50 packets/s (a full-duplex call).
Baseline, measured in the same run: a raw `sock.sendto` loop of the same packet (µs per packet), so the per-packet
cost is also given as a ratio that survives a different or noisy machine.

Drift (--drift-minutes M): one session, and beside it a naive `await asyncio.sleep(0.020)` sender, both to an
in-process receiver; reports how far each stream's arrival clock has moved against its RTP timestamps after M
minutes (and the per-10-minute rate).

Run:  python3 bench/media.py                                  # ramp 100,250,500,1000,1500 (10 s each)
      python3 bench/media.py --ramp 500,1000,1500,2000 --seconds 20 --echo
      python3 bench/media.py --no-ramp --drift-minutes 10
      python3 bench/media.py --loop uvloop                    # needs `pip install uvloop`
This script must not be collected as a test, and must not change media/ behaviour (it only drives public APIs).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import multiprocessing as mp
import os
import resource
import socket
import statistics
import struct
import sys
import time
from array import array
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media import g711, sdp  # noqa: E402
from media.ports import PortAllocator  # noqa: E402
from media.rtp import RtpPacket, pack_header  # noqa: E402
from media.session import HIST_BINS, RtpSession, histogram_percentile  # noqa: E402

HOST = "127.0.0.1"
FREEZE_GC = False


# -- a PcmSource-like generator -------------------------------------------------------------------------------------
class LoopingTone:
    """An endless 20 ms-frame source cycling over one second of a 440 Hz tone (a precomputed PCM buffer)."""

    _frames: list[bytes] | None = None

    def __init__(self) -> None:
        if LoopingTone._frames is None:
            pcm = struct.pack("<8000h", *(int(6000 * math.sin(2 * math.pi * 440 * n / 8000)) for n in range(8000)))
            LoopingTone._frames = [pcm[i:i + 320] for i in range(0, len(pcm), 320)]
        self.frames = LoopingTone._frames
        self.index = 0

    def read_frame(self) -> bytes | None:
        frame = self.frames[self.index]
        self.index = (self.index + 1) % 50
        return frame


# -- the sink process -----------------------------------------------------------------------------------------------
def sink_main(port_out: Connection, control: Connection, echo: bool) -> None:
    """Count (and optionally echo) datagrams on one UDP socket; answer 'count' / 'reset' / 'stop' on `control`.

    The sink drains its socket every 2 ms instead of blocking in recv(): a receiver asleep on the socket would be
    woken by every datagram, and on loopback that wake-up is paid inside the *sender's* sendto (several µs), which a
    real NIC never charges. Draining in batches keeps the sender's cost close to what it is on a real network."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    port_out.send(sock.getsockname()[1])
    count = 0
    buf = bytearray(2048)
    view = memoryview(buf)
    while True:
        time.sleep(0.002)
        try:
            while True:
                if echo:
                    n, addr = sock.recvfrom_into(buf)
                    try:
                        sock.sendto(view[:n], addr)
                    except BlockingIOError:
                        pass
                else:
                    sock.recv_into(buf)
                count += 1
        except BlockingIOError:
            pass
        while control.poll():
            command = control.recv()
            if command == "count":
                control.send(count)
            elif command == "reset":
                count = 0
                control.send(0)
            elif command == "stop":
                control.send(count)
                return


class Sink:
    def __init__(self, echo: bool) -> None:
        ctx = mp.get_context("fork")
        port_recv, port_send = ctx.Pipe(duplex=False)
        self.control, child = ctx.Pipe()
        self.proc = ctx.Process(target=sink_main, args=(port_send, child, echo), daemon=True)
        self.proc.start()
        self.port: int = port_recv.recv()

    def ask(self, command: str) -> int:
        self.control.send(command)
        return int(self.control.recv())

    async def ask_async(self, command: str) -> int:
        """ask() without blocking the event loop and without a helper thread (a thread fighting the sessions for
        the GIL showed up as 20-40 ms stalls at the edges of the measurement window)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[int] = loop.create_future()
        fd = self.control.fileno()

        def readable() -> None:
            loop.remove_reader(fd)
            answer.set_result(int(self.control.recv()))

        loop.add_reader(fd, readable)
        self.control.send(command)
        return await answer

    def stop(self) -> None:
        try:
            self.ask("stop")
        finally:
            self.proc.join(5)


# -- baseline -------------------------------------------------------------------------------------------------------
def baseline_sendto(port: int, count: int = 200_000) -> float:
    """Seconds of CPU per `sendto` of a 172-byte RTP packet from a non-blocking socket (no pacing, no Python work)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    packet = pack_header(0, 1, 160, 1234) + g711.SILENCE["PCMU"]
    target = (HOST, port)
    sent = 0
    start = time.process_time()
    for _ in range(count):
        try:
            sock.sendto(packet, target)
            sent += 1
        except BlockingIOError:
            pass
    spent = time.process_time() - start
    sock.close()
    return spent / max(sent, 1)


# -- the ramp -------------------------------------------------------------------------------------------------------
async def run_round(n: int, sink: Sink, allocator: PortAllocator, seconds: float, warmup: float,
                    echo: bool, variant: str) -> dict[str, Any]:
    if variant == "minimal":
        return await run_minimal(n, sink, seconds, warmup)
    loop = asyncio.get_running_loop()
    offer = sdp.build_offer(HOST, sink.port, codecs=("PCMU",))
    kwargs: dict[str, Any] = {"clock": loop} if variant == "per-stream" else {}
    sessions = [await RtpSession.open(allocator, HOST, HOST, **kwargs) for _ in range(n)]
    for s in sessions:
        s.log = QuietLog()
    start = loop.time() + 0.05
    started = loop.create_future()

    def begin(i: int, session: RtpSession) -> None:
        session.answer(offer)
        session.play(LoopingTone())
        if echo:
            session.add_sink(_NullSink())  # received audio is decoded and re-chunked, as for a recorder
        if i == n - 1 and not started.done():
            started.set_result(None)

    for i, session in enumerate(sessions):  # spread the phases over one 20 ms period
        loop.call_at(start + 0.020 * i / n, begin, i, session)
    await started
    if FREEZE_GC:
        gc.collect()
        gc.freeze()  # the long-lived session objects leave the collector's generations
    await asyncio.sleep(warmup)
    await sink.ask_async("reset")
    for s in sessions:
        s.stats.reset_timing()
    sent0 = sum(s.stats.packets_sent for s in sessions)
    recv0 = sum(s.stats.packets_received for s in sessions)
    cpu0, wall0 = time.process_time(), loop.time()
    await asyncio.sleep(seconds)
    cpu1, wall1 = time.process_time(), loop.time()
    sent = sum(s.stats.packets_sent for s in sessions) - sent0  # snapshot everything before the next await
    received_back = sum(s.stats.packets_received for s in sessions) - recv0
    late = sum(s.stats.late_sends for s in sessions)
    skipped = sum(s.stats.skipped_ticks for s in sessions)
    worst = max(s.stats.max_lateness for s in sessions)
    histograms = [s.stats.lateness_hist for s in sessions]
    for s in sessions:
        s.stats.reset_timing()  # keeps the figures above from moving
    sink_count = await sink.ask_async("count")
    hist = array("I", bytes(4 * HIST_BINS))
    for h in histograms:
        for i, v in enumerate(h):
            if v:
                hist[i] += v
    for s in sessions:
        s.close()
    await asyncio.sleep(0.3)
    cpu = cpu1 - cpu0
    wall = wall1 - wall0
    expected = n * wall / 0.020
    return {
        "n": n, "sent": sent, "expected": expected, "late_pct": 100 * late / max(sent, 1),
        "p50_ms": 1000 * histogram_percentile(hist, 0.50), "p99_ms": 1000 * histogram_percentile(hist, 0.99),
        "max_ms": 1000 * worst, "cpu_pct": 100 * cpu / wall, "us_per_packet": 1e6 * cpu / max(sent, 1),
        "sink_pct": 100 * sink_count / max(sent, 1), "skipped": skipped,
        "echo_pct": 100 * received_back / max(sent, 1) if echo else None,
    }


async def run_minimal(n: int, sink: Sink, seconds: float, warmup: float) -> dict[str, Any]:
    """Baseline: the least a paced Python sender can do - N `loop.call_at` chains, each sending one prebuilt packet
    (seq/timestamp patched with struct.pack_into) from its own unconnected socket. No encoding, no source, no stats
    beyond lateness."""
    loop = asyncio.get_running_loop()
    target = (HOST, sink.port)
    hist = array("I", bytes(4 * HIST_BINS))
    state = {"sent": 0, "late": 0, "max": 0.0, "stop": False}
    sockets: list[socket.socket] = []
    start = loop.time() + 0.05

    def chain(sock: socket.socket, phase: float) -> None:
        packet = bytearray(pack_header(0, 0, 0, 1234) + g711.SILENCE["PCMU"])
        k = 0

        def tick() -> None:
            nonlocal k
            if state["stop"]:
                return
            due = start + phase + k * 0.020
            k += 1
            loop.call_at(start + phase + k * 0.020, tick)
            late = loop.time() - due
            struct.pack_into("!HI", packet, 2, k & 0xFFFF, (k * 160) & 0xFFFFFFFF)
            sock.sendto(packet, target)
            state["sent"] += 1
            if late > 0.005:
                state["late"] += 1
            if late > state["max"]:
                state["max"] = late
            index = int(late * 10000) if late > 0 else 0
            hist[index if index < HIST_BINS else HIST_BINS - 1] += 1

        loop.call_at(start + phase, tick)

    for i in range(n):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sockets.append(sock)
        chain(sock, 0.020 * i / n)
    await asyncio.sleep(warmup + 0.05)
    await sink.ask_async("reset")
    for i in range(len(hist)):
        hist[i] = 0
    sent0, state["late"], state["max"] = state["sent"], 0, 0.0
    cpu0, wall0 = time.process_time(), loop.time()
    await asyncio.sleep(seconds)
    cpu1, wall1 = time.process_time(), loop.time()
    sent = int(state["sent"]) - int(sent0)
    late = int(state["late"])
    state["stop"] = True
    sink_count = await sink.ask_async("count")
    await asyncio.sleep(0.05)
    for sock in sockets:
        sock.close()
    await asyncio.sleep(0.3)
    cpu, wall = cpu1 - cpu0, wall1 - wall0
    return {
        "n": n, "sent": sent, "expected": n * wall / 0.020, "late_pct": 100 * late / max(sent, 1),
        "p50_ms": 1000 * histogram_percentile(hist, 0.50), "p99_ms": 1000 * histogram_percentile(hist, 0.99),
        "max_ms": 1000 * float(state["max"]), "cpu_pct": 100 * cpu / wall, "us_per_packet": 1e6 * cpu / max(sent, 1),
        "sink_pct": 100 * sink_count / max(sent, 1), "skipped": 0, "echo_pct": None,
    }


class _NullSink:
    def write_frame(self, pcm: bytes) -> None:
        pass


class QuietLog:
    """Drop the per-session info logs (thousands of 'rtp_negotiated' lines would swamp the table)."""

    def info(self, *args: object, **kwargs: object) -> None:
        pass

    def exception(self, *args: object, **kwargs: object) -> None:
        print("session error:", args, kwargs, file=sys.stderr)

    def bind(self, **kwargs: object) -> QuietLog:
        return self


def _row(variant: str, r: dict[str, Any], base: float, echo: bool) -> str:
    line = (f"{variant:>10} {r['n']:>7} {r['sent']:>8} {r['late_pct']:>8.3f}% {r['p50_ms']:>5.1f}m "
            f"{r['p99_ms']:>5.1f}m {r['max_ms']:>6.1f}m {r['cpu_pct']:>6.1f}% {r['us_per_packet']:>7.2f} "
            f"{r['us_per_packet'] / (base * 1e6):>6.1f} {r['cpu_pct'] / r['n']:>10.4f} {r['sink_pct']:>7.1f}%")
    if echo and r["echo_pct"] is not None:
        line += f" {r['echo_pct']:>7.1f}%"
    if r["skipped"]:
        line += f"  ({r['skipped']} ticks skipped)"
    return line


async def ramp(args: argparse.Namespace) -> None:
    sink = Sink(args.echo)
    try:
        base = baseline_sendto(sink.port)
        await sink.ask_async("reset")
        print(f"loop: {args.loop}; G.711 backend: {g711.BACKEND}; python {sys.version.split()[0]}; "
              f"{os.cpu_count()} CPUs; echo: {args.echo}; {args.seconds:g} s per step after {args.warmup:g} s")
        print(f"baseline: raw sendto of a 172-byte packet = {base * 1e6:.2f} us CPU/packet "
              f"(= {base * 50 * 1e6 / 1e4:.3f} % of a core per 50 pps stream)\n")
        head = (f"{'variant':>10} {'streams':>7} {'pkts':>8} {'late>5ms':>9} {'p50':>6} {'p99':>6} {'max':>7} "
                f"{'CPU':>7} {'us/pkt':>7} {'x base':>6} {'%core/strm':>10} {'sink rx':>8}")
        print(head + (f" {'echo rx':>8}" if args.echo else ""))
        allocator = PortAllocator(args.port_min, args.port_max)
        best: dict[str, int] = {v: 0 for v in args.variants}
        stopped: set[str] = set()
        for n in args.ramp:
            for variant in args.variants:
                if variant in stopped:
                    continue
                echo = args.echo and variant != "minimal"
                r = await run_round(n, sink, allocator, args.seconds, args.warmup, echo, variant)
                print(_row(variant, r, base, args.echo), flush=True)
                if r["late_pct"] < 1.0 and r["sent"] >= 0.95 * r["expected"]:
                    best[variant] = max(best[variant], n)
                if r["late_pct"] > 20:
                    print(f"   ({variant}: more than 20% late, not ramping it further)")
                    stopped.add(variant)
        print()
        for variant, n_best in best.items():
            print(f"max streams with < 1% late sends, {variant}: " + (str(n_best) if n_best else "not reached"))
    finally:
        sink.stop()


# -- drift ----------------------------------------------------------------------------------------------------------
class _Arrivals(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.by_ssrc: dict[int, list[tuple[float, int]]] = {}
        self.clock = time.monotonic

    def datagram_received(self, data: bytes, addr: Any) -> None:
        p = RtpPacket.parse(data)
        self.by_ssrc.setdefault(p.ssrc, []).append((self.clock(), p.timestamp))


def _slope_ms_per_min(points: list[tuple[float, int]]) -> tuple[float, float]:
    """(offset change over the run in ms, linear-fit slope in ms per minute) of arrival time - RTP time."""
    t0, ts0 = points[0]
    xs = [t - t0 for t, _ in points]
    ys = [((t - t0) - ((ts - ts0) & 0xFFFFFFFF) / 8000) * 1000 for t, ts in points]
    head = statistics.median(ys[:50])
    tail = statistics.median(ys[-50:])
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return tail - head, slope * 60


async def drift(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    receiver = _Arrivals()
    transport, _ = await loop.create_datagram_endpoint(lambda: receiver, local_addr=(HOST, 0))
    port = transport.get_extra_info("sockname")[1]
    allocator = PortAllocator(args.port_min, args.port_max)
    session = await RtpSession.open(allocator, HOST, HOST)
    session.log = QuietLog()
    session.answer(sdp.build_offer(HOST, port, codecs=("PCMU",)))
    session.play(LoopingTone())
    naive_ssrc = 0x5EED

    async def naive() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        seq, ts = 0, 0
        try:
            while True:
                sock.sendto(pack_header(0, seq, ts, naive_ssrc) + g711.SILENCE["PCMU"], (HOST, port))
                seq, ts = seq + 1, ts + 160
                await asyncio.sleep(0.020)
        finally:
            sock.close()

    naive_task = asyncio.create_task(naive())
    seconds = args.drift_minutes * 60
    print(f"drift: one RtpSession and one naive sleep(0.020) sender for {args.drift_minutes:g} min ...", flush=True)
    await asyncio.sleep(seconds)
    naive_task.cancel()
    stats = session.stats
    session.close()
    transport.close()
    ours = receiver.by_ssrc[session.ssrc]
    theirs = receiver.by_ssrc[naive_ssrc]
    change, slope = _slope_ms_per_min(ours)
    naive_change, naive_slope = _slope_ms_per_min(theirs)
    expected = seconds / 0.020
    print(f"RtpSession (absolute grid, shared MediaClock): {len(ours)} packets of {expected:.0f} expected; "
          f"arrival-vs-RTP-clock offset moved {change:+.2f} ms; fit {slope:+.3f} ms/min -> "
          f"{slope * 10:+.2f} ms per 10 min; "
          f"send lateness p99 {stats.lateness_percentile(0.99) * 1000:.2f} ms, max "
          f"{stats.max_lateness * 1000:.2f} ms, late>5ms {stats.late_sends}")
    print(f"naive asyncio.sleep(0.020) sender:  {len(theirs)} packets; offset moved {naive_change:+.1f} ms; fit "
          f"{naive_slope:+.1f} ms/min -> {naive_slope * 10 / 1000:+.2f} s per 10 min")


# -- main -----------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ramp", type=lambda s: [int(x) for x in s.split(",")], default=[100, 250, 500, 1000, 1500],
                    help="stream counts to try, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0, help="measurement time per step")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring each step")
    ap.add_argument("--echo", action="store_true", help="the sink echoes every packet (full-duplex sessions)")
    ap.add_argument("--no-ramp", action="store_true", help="skip the ramp (e.g. only the drift run)")
    ap.add_argument("--drift-minutes", type=float, default=0.0, help="also run the drift measurement (minutes)")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    ap.add_argument("--variants", type=lambda s: s.split(","), default=["shared", "per-stream", "minimal"],
                    help="shared: RtpSession on the shared MediaClock; per-stream: RtpSession with one loop.call_at "
                         "timer each; minimal: the bare paced-sendto baseline")
    ap.add_argument("--port-min", type=int, default=24000)
    ap.add_argument("--port-max", type=int, default=31999)
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() once the sessions are set up (shows what full GC passes cost)")
    args = ap.parse_args(argv)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * max(args.ramp) + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    if args.loop == "uvloop":
        import uvloop  # type: ignore[import-not-found]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    global FREEZE_GC
    FREEZE_GC = args.gc_freeze

    async def run() -> None:
        if not args.no_ramp:
            await ramp(args)
        if args.drift_minutes > 0:
            await drift(args)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
