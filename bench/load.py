"""Load steps and what is derived from them: one step at a fixed rate, the search for the highest clean rate, and the
media ramp (concurrent bridged calls with RTP both ways, measured by bench/rtpmeter.c).

A step is clean when every call succeeded at both SIPp ends, no SIP message was retransmitted (SIPp's own timers
and the retransmissions it received, at both ends, plus the engine's counter), every hangup callback arrived (the
engine), p99 setup time (the caller's INVITE -> its 200) is at most 200 ms, and SIPp kept the offered rate.
"""

from __future__ import annotations

import math
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .procs import HOST, ROOT, cpu_seconds, free_port, percentile, rss_bytes, run_sipp_client
from .subjects import Engines, Subject

P99_LIMIT_MS = 200.0
HOLD_MS = 100  # short calls: sippy answers a BYE that follows the ACK at once only after a retransmission
_sink: socket.socket | None = None


def rtp_sink_port() -> str:
    """A UDP port on HOST that takes the RTP of the load steps and drops it (a socket never read, with a small
    buffer): a closed port would answer every packet with ICMP, and the engine would pay for an error per packet."""
    global _sink
    if _sink is None:
        _sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        _sink.bind((HOST, 0))
    return str(_sink.getsockname()[1])

Progress = Callable[[str], None]


@dataclass
class Step:
    subject: str
    rate: float
    seconds: float
    hold_ms: int
    calls: int = 0
    achieved: float = 0.0
    successful: int = 0
    failed: int = 0
    far_failed: int = 0
    unexpected: int = 0
    retrans_caller: int = 0
    retrans_far: int = 0
    retrans_engine: int = 0
    hangups_missing: int = 0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    cpu_s: float = 0.0
    cpu_ms_per_call: float = 0.0
    passed: bool = False
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def retransmissions(self) -> int:
        return self.retrans_caller + self.retrans_far + self.retrans_engine

    @property
    def failures(self) -> int:
        return self.failed + self.far_failed + self.hangups_missing + max(0, self.calls - self.successful - self.failed)

    def line(self) -> str:
        p = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
        verdict = "clean" if self.passed else f"NOT clean ({self.reason})"
        return (f"{self.rate:>7.0f} CPS x {self.seconds:g} s: {self.successful}/{self.calls} ok, "
                f"setup p50 {p(self.p50_ms)} / p99 {p(self.p99_ms)} ms, retrans {self.retransmissions}, "
                f"cpu {self.cpu_ms_per_call:.2f} ms/call -> {verdict}")

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["retransmissions"] = self.retransmissions
        d["failures"] = self.failures
        return d


def run_step(subject: Subject, rate: float, seconds: float, *, hold_ms: int = HOLD_MS,
             cpu_pids: list[int] | None = None) -> Step:
    """`rate` calls per second for `seconds` against `subject` (a fresh far end), judged clean or not."""
    calls = max(1, int(round(rate * seconds)))
    step = Step(subject.name, rate, seconds, hold_ms, calls=calls)
    pids = cpu_pids if cpu_pids is not None else subject.cpu_pids()
    subject.before_step()
    far = subject.far_end({"rtp_host": HOST, "rtp_port": rtp_sink_port()})
    cpu0 = cpu_seconds(pids)
    try:
        caller = run_sipp_client(subject.workdir / "steps", f"caller{subject._step:03d}", subject.target, rate=rate,
                                 calls=calls, hold_ms=hold_ms, keys={"rtp_host": HOST, "rtp_port": rtp_sink_port()},
                                 limit=max(int(rate * 4), 200), timeout=seconds * 3 + hold_ms / 1000 + 30)
    finally:
        time.sleep(0.3)  # the far end's last 200 (BYE) and the engine's last callbacks
        far_stats = far.stop()
    step.cpu_s = cpu_seconds(pids) - cpu0
    check = subject.check_step(calls)
    step.successful, step.failed = caller.successful, caller.failed
    step.achieved = caller.rate
    step.far_failed = far_stats.failed
    step.unexpected = caller.unexpected + far_stats.unexpected
    step.retrans_caller, step.retrans_far = caller.retransmissions, far_stats.retransmissions
    step.retrans_engine = check.retransmissions
    step.hangups_missing = check.hangups_missing
    step.notes = check.notes
    ms = caller.setup_ms
    step.p50_ms, step.p90_ms, step.p99_ms = percentile(ms, 0.5), percentile(ms, 0.9), percentile(ms, 0.99)
    step.max_ms = max(ms) if ms else None
    step.cpu_ms_per_call = 1000 * step.cpu_s / calls
    reasons = []
    if step.failures:
        reasons.append(f"{step.failures} failed")
    if step.retransmissions:
        reasons.append(f"{step.retransmissions} retransmissions")
    if step.unexpected:
        reasons.append(f"{step.unexpected} unexpected messages")
    if step.p99_ms is None or step.p99_ms > P99_LIMIT_MS:
        reasons.append(f"p99 {step.p99_ms} ms")
    if caller.rate < 0.9 * rate:
        reasons.append(f"SIPp reached {caller.rate:.0f} CPS")
    step.passed = not reasons
    step.reason = ", ".join(reasons)
    return step


@dataclass
class Search:
    subject: str
    label: str
    max_cps: float = 0.0
    capped: bool = False  # the search stopped at its ceiling still clean: the real maximum is higher
    confirmed_seconds: float = 0.0
    steps: list[Step] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"subject": self.subject, "label": self.label, "max_cps": self.max_cps, "capped": self.capped,
                "confirmed_seconds": self.confirmed_seconds, "steps": [s.as_dict() for s in self.steps]}


def _round_rate(rate: float) -> float:
    if rate < 20:
        return float(max(1, round(rate)))
    digits = int(math.floor(math.log10(rate))) - 1
    return float(round(rate, -digits))


def find_max_cps(subject: Subject, *, start: float, ceiling: float, step_s: float, confirm_s: float,
                 precision: float, progress: Progress, cpu_pids: list[int] | None = None) -> Search:
    """Raise the rate (x1.5, from `start`) until a step is not clean, then bisect (geometric) until the bounds are
    within `precision`, then hold the best clean rate for `confirm_s` (stepping down 10 % if that fails)."""
    search = Search(subject.name, subject.label)

    def step(rate: float, seconds: float) -> bool:
        nonlocal cpu_pids
        s = run_step(subject, rate, seconds, cpu_pids=cpu_pids)
        search.steps.append(s)
        progress(f"[{subject.name}] {s.line()}")
        # A step that was not clean leaves work behind: calls still up, and transactions retransmitting (BYE, 2xx,
        # up to 64*T1 = 32 s) towards that step's far end, which is gone. Counted against the next step, it would
        # fail a rate the subject carries when it starts clean; every subject starts each step afresh instead.
        if subject.dirty or not s.passed:
            why = "calls were left up" if subject.dirty else "the step was not clean"
            progress(f"[{subject.name}] restarting ({why})")
            subject.restart()
            if cpu_pids is not None:
                cpu_pids = subject.cpu_pids() if not isinstance(subject, Engines) else subject.engine_pids()
        return s.passed

    lo, hi = 0.0, None
    rate = _round_rate(start)
    while True:
        if step(rate, step_s):
            lo = rate
            if rate >= ceiling:
                search.capped = True
                break
            rate = _round_rate(min(ceiling, rate * 1.5))
        else:
            hi = rate
            if lo:
                break
            rate = _round_rate(rate / 2)
            if rate < 2:
                break
    while hi is not None and lo and hi / lo > 1 + precision:
        mid = _round_rate(math.sqrt(lo * hi))
        if mid in (lo, hi):
            break
        if step(mid, step_s):
            lo = mid
        else:
            hi = mid
    if confirm_s and lo:
        for _ in range(3):
            if step(lo, confirm_s):
                search.confirmed_seconds = confirm_s
                break
            lo = _round_rate(lo * 0.85)
        else:  # never held for the confirmation time: report the best short clean step, marked unconfirmed
            lo = max((s.rate for s in search.steps if s.passed), default=0.0)
    search.max_cps = lo
    return search


# -- media ramp --------------------------------------------------------------------------------------------------------
class RtpMeter:
    """bench/rtpmeter.c, compiled once into var/bench/, running on two ports; `lines()` drains its reports."""

    def __init__(self, workdir: Path) -> None:
        source = Path(__file__).with_name("rtpmeter.c")
        binary = ROOT / "var" / "bench" / "rtpmeter"
        binary.parent.mkdir(parents=True, exist_ok=True)
        if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
            subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True)
        self.port_a = free_port()
        self.port_b = free_port()
        self.popen = subprocess.Popen([str(binary), str(self.port_a), str(self.port_b)], stdout=subprocess.PIPE,
                                      stderr=(workdir / "rtpmeter.err").open("wb"), stdin=subprocess.DEVNULL,
                                      text=True)
        assert self.popen.stdout is not None
        first = self.popen.stdout.readline()
        if first.strip() != "ready":
            raise RuntimeError(f"rtpmeter did not start: {first!r}")
        self._lines: queue.Queue[dict[str, float]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            try:
                self._lines.put({k: float(v) for k, v in fields.items()})
            except ValueError:
                continue

    def lines(self) -> list[dict[str, float]]:
        out = []
        while True:
            try:
                out.append(self._lines.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


@dataclass
class Ramp:
    target_calls: int
    rate: float
    loss_limit: float
    max_concurrent_clean: int = 0
    capped: bool = False  # the target was reached with every window clean: the real maximum is higher
    peak_concurrent: int = 0
    stopped_because: str = ""
    first_bad_window: dict[str, float] | None = None
    rss_idle_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_per_call_kb: float = 0.0  # slope of RSS over bridged calls while ramping up (clean windows)
    rss_per_call_kb_peak: float = 0.0  # (RSS at the last clean window - idle) / its calls
    caller_calls: int = 0
    caller_failed: int = 0
    cpu_at_peak: float = 0.0  # engine CPU share (1.0 = one core) in the last clean window
    windows: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _windows(samples: list[dict[str, float]]) -> list[dict[str, float]]:
    """Pairs of the meter's 1-second lines: 2-second windows."""
    out = []
    for i in range(0, len(samples) - 1, 2):
        a, b = samples[i], samples[i + 1]
        expected = a["expected"] + b["expected"]
        bad = a["lost"] + a["late"] + b["lost"] + b["late"]
        out.append({"elapsed": b["elapsed"], "bridged": b["b_streams"], "legs": b["a_streams"] + b["b_streams"],
                    "expected": expected, "lost": a["lost"] + b["lost"], "late": a["late"] + b["late"],
                    "bad_ratio": bad / expected if expected else 0.0, "meter_tx_late": a["tx_late"] + b["tx_late"],
                    "rss_mb": b["rss_mb"],
                    "engine_cpu": (b["cpu_s"] - a["cpu_s"]) / max(1e-6, b["elapsed"] - a["elapsed"])})
    return out


def media_ramp(subject: Engines, meter: RtpMeter, *, target_calls: int, rate: float, plateau_s: float,
               loss_limit: float, progress: Progress) -> Ramp:
    """Calls come at `rate` and stay up; the meter's per-second figures are gathered in 2-second windows with the
    number of bridged calls (B-leg streams). Stops when the target was held `plateau_s`, after two windows over
    `loss_limit`, or when the number of bridged calls stops growing for 10 s; the calls are then left to the
    engine's shutdown."""
    engine = subject.engines[0]
    ramp = Ramp(target_calls, rate, loss_limit)
    engine.wait_idle(10)
    time.sleep(1.0)
    ramp.rss_idle_mb = rss_bytes(engine.proc.pid) / 2**20
    meter.lines()
    samples: list[dict[str, float]] = []
    started = time.monotonic()
    state = {"printed": started, "reached": 0.0, "grew": started, "best": 0.0}

    def tick() -> bool:
        for line in meter.lines():
            line["elapsed"] = time.monotonic() - started
            line["rss_mb"] = rss_bytes(engine.proc.pid) / 2**20
            line["cpu_s"] = cpu_seconds(engine.proc.pids())
            samples.append(line)
        if not samples:
            return False
        now, last = time.monotonic(), samples[-1]
        if now - state["printed"] >= 5:
            state["printed"] = now
            bad = (last["lost"] + last["late"]) / last["expected"] if last["expected"] else 0.0
            progress(f"[media] {last['elapsed']:5.1f} s: {int(last['b_streams'])} bridged calls, "
                     f"{last['rx'] / 1000:.1f}k RTP pkt/s to the far ends, lost+late {100 * bad:.2f} %, "
                     f"engine RSS {last['rss_mb']:.0f} MB")
        if last["b_streams"] > state["best"]:
            state["best"], state["grew"] = last["b_streams"], now
        windows = _windows(samples)
        if len(windows) >= 2 and all(w["expected"] and w["bad_ratio"] >= loss_limit for w in windows[-2:]):
            ramp.stopped_because = "two windows over the loss limit"
            return True
        if last["b_streams"] >= target_calls:
            state["reached"] = state["reached"] or now
            if now - state["reached"] >= plateau_s:
                ramp.stopped_because = f"target held {plateau_s:g} s"
                return True
        if now - state["grew"] > 10:
            ramp.stopped_because = "bridged calls stopped growing for 10 s"
            return True
        return False

    subject.before_step()
    far = subject.far_end({"rtp_host": HOST, "rtp_port": str(meter.port_b)})
    try:
        caller = run_sipp_client(subject.workdir / "steps", "media_caller", subject.target, rate=rate,
                                 calls=target_calls + 50, hold_ms=3_600_000,
                                 keys={"rtp_host": HOST, "rtp_port": str(meter.port_a)}, limit=target_calls + 50,
                                 timeout=target_calls / rate * 3 + 60, on_tick=tick)
    finally:
        far.stop()
    ramp.caller_calls, ramp.caller_failed = caller.calls, caller.failed
    windows = _windows(samples)
    ramp.windows = windows
    ramp.peak_concurrent = int(max((w["bridged"] for w in windows), default=0))
    clean: list[dict[str, float]] = []
    for w in windows:
        if w["expected"] and w["bad_ratio"] >= loss_limit:
            ramp.first_bad_window = w
            break
        clean.append(w)
    else:
        ramp.capped = ramp.peak_concurrent >= target_calls
    ramp.max_concurrent_clean = int(max((w["bridged"] for w in clean), default=0))
    with_calls = [w for w in clean if w["bridged"] > 0]
    if with_calls:
        ramp.cpu_at_peak = with_calls[-1]["engine_cpu"]
        ramp.rss_per_call_kb_peak = 1024 * (with_calls[-1]["rss_mb"] - ramp.rss_idle_mb) / with_calls[-1]["bridged"]
    ramp.rss_peak_mb = max((w["rss_mb"] for w in windows), default=ramp.rss_idle_mb)
    if len(with_calls) >= 3:
        xs = [w["bridged"] for w in with_calls]
        ys = [w["rss_mb"] for w in with_calls]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mx) ** 2 for x in xs)
        if var:
            ramp.rss_per_call_kb = 1024 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    return ramp
