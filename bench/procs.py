"""Processes of `python -m bench`: free ports, long-lived daemons, SIPp runs and what their files say, CPU and RSS.

Everything here is synchronous and local (127.0.0.1): the benchmark drives real processes and reads their numbers;
nothing here knows what is being measured (bench/subjects.py and bench/__main__.py do).
"""

from __future__ import annotations

import contextlib
import csv
import glob
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
SIPP_DIR = Path(__file__).resolve().parent / "sipp"
BUFF = "2097152"  # SIPp's -buff_size: smaller socket buffers drop datagrams at a few thousand CPS here
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

_handed_out: set[int] = set()


def free_port(block: int = 1) -> int:
    """The first of `block` consecutive ports free on UDP and TCP now, never handed out before in this process."""
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((HOST, 0))
            first = int(u.getsockname()[1])
        ports = range(first, first + block)
        if first + block > 65000 or any(p in _handed_out for p in ports) or not all(map(_free, ports)):
            continue
        _handed_out.update(ports)
        return first
    raise RuntimeError("no free port found")


def _free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return False
    return True


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer in {timeout:g} s")
        time.sleep(0.1)


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def http_post(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=timeout) as r:
        return r.read().decode()


def wait_udp_listening(port: int, timeout: float = 10.0) -> None:
    """Until something is bound to UDP `port` on HOST (the bind test fails)."""
    deadline = time.monotonic() + timeout
    while _udp_free(port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on udp:{port} after {timeout:g} s")
        time.sleep(0.05)


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


# -- processes -----------------------------------------------------------------------------------------------------
class Proc:
    """One long-lived process (its own session, output to a log file); stop() ends its whole process group."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None,
                 stdout: int | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log = workdir / f"{name}.log"
        self._out = self.log.open("wb")
        self.popen = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                      stdout=stdout if stdout is not None else self._out, stderr=self._out,
                                      start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def pids(self) -> list[int]:
        """This process and all its descendants (Kamailio's workers)."""
        return tree_pids(self.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()
        self._out.close()


def tree_pids(pid: int) -> list[int]:
    out = [pid]
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        with contextlib.suppress(OSError):
            for child in Path(task).read_text().split():
                out += tree_pids(int(child))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


# -- SIPp ----------------------------------------------------------------------------------------------------------
@dataclass
class SippStats:
    """What one SIPp process reported (final lines of its -trace_stat and -trace_counts files)."""

    calls: int = 0  # created
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0  # sent by SIPp (timers) + received retransmissions it detected
    timeouts: int = 0
    unexpected: int = 0
    elapsed: float = 0.0
    setup_ms: list[float] = field(default_factory=list)  # response time 1 (INVITE -> 200) per call, UAC only
    exit_code: int | None = None

    @property
    def rate(self) -> float:
        return self.calls / self.elapsed if self.elapsed > 0 else 0.0


def _last_row(path: Path) -> dict[str, str]:
    try:
        rows = list(csv.reader(path.open(errors="replace"), delimiter=";"))
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def _elapsed(text: str) -> float:
    """SIPp's 'HH:MM:SS:micro' (or 'HH:MM:SS') as seconds."""
    parts = text.strip().split(":")
    try:
        h, m, s = int(parts[0]), int(parts[1]), int(parts[2])
        micro = int(parts[3]) if len(parts) > 3 else 0
    except (ValueError, IndexError):
        return 0.0
    return h * 3600 + m * 60 + s + micro / 1e6


def read_sipp_files(workdir: Path, name: str) -> SippStats:
    stats = SippStats()
    row = _last_row(workdir / f"{name}_stat.csv")
    if row:
        stats.calls = int(row.get("OutgoingCall(C)", 0) or 0) + int(row.get("IncomingCall(C)", 0) or 0)
        stats.successful = int(row.get("SuccessfulCall(C)", 0) or 0)
        stats.failed = int(row.get("FailedCall(C)", 0) or 0)
        stats.elapsed = _elapsed(row.get("ElapsedTime(C)", ""))
    for counts in glob.glob(str(workdir / f"{name}_*_counts.csv")):
        crow = _last_row(Path(counts))
        for key, value in crow.items():
            if not value.strip().isdigit():
                continue
            if key.endswith("_Retrans"):
                stats.retransmissions += int(value)
            elif key.endswith("_Timeout"):
                stats.timeouts += int(value)
            elif key.endswith("_Unexp"):
                stats.unexpected += int(value)
    for rtt in glob.glob(str(workdir / f"{name}_*_rtt.csv")):
        with open(rtt, errors="replace") as f:
            next(f, None)
            for line in f:
                parts = line.strip().split(";")
                if len(parts) >= 3 and parts[2] == "1":
                    with contextlib.suppress(ValueError):
                        stats.setup_ms.append(float(parts[1]))
    return stats


def sipp_argv(name: str, scenario: str, port: int, keys: dict[str, str], extra: list[str]) -> list[str]:
    """Common SIPp arguments; every file it writes is named after `name` (copies of the scenario are named so)."""
    argv = ["sipp", *extra, "-sf", str(SIPP_DIR / scenario), "-i", HOST, "-p", str(port),
            "-mp", str(free_port(4)), "-buff_size", BUFF, "-nostdin", "-trace_stat", "-stf", f"{name}_stat.csv",
            "-fd", "1", "-trace_counts", "-trace_err", "-error_file", f"{name}_errors.log"]
    for key, value in keys.items():
        argv += ["-key", key, value]
    return argv


class SippServer:
    """A SIPp UAS (trunk or far end) for one load step; stop() makes it quit (SIGUSR1 = 'q') and reads its files."""

    def __init__(self, workdir: Path, name: str, scenario: str, port: int, keys: dict[str, str]) -> None:
        self.workdir = workdir
        self.name = name
        self.port = port
        workdir.mkdir(parents=True, exist_ok=True)
        # The counts file is named after the scenario file: give each server its own copy.
        scenario_copy = workdir / f"{name}.xml"
        scenario_copy.write_bytes((SIPP_DIR / scenario).read_bytes())
        argv = sipp_argv(name, str(scenario_copy), port, keys, [])
        self.proc = Proc(name, argv, workdir)
        wait_udp_listening(port)

    def stop(self) -> SippStats:
        if self.proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGUSR1)
            try:
                self.proc.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.proc.stop()
        stats = read_sipp_files(self.workdir, self.name)
        stats.exit_code = self.proc.popen.returncode
        return stats


def run_sipp_client(workdir: Path, name: str, target: str, *, rate: float, calls: int, hold_ms: int,
                    keys: dict[str, str], service: str = "15551230000", limit: int | None = None,
                    timeout: float = 120.0, on_tick: object = None) -> SippStats:
    """The SIPp load caller (bench/sipp/uac.xml): `calls` calls at `rate` per second, each held `hold_ms`, then
    BYE. Blocks until SIPp is done; `on_tick()` (if given) is called about every 0.5 s meanwhile, and SIPp is killed
    (its calls left as they are) when it returns True."""
    workdir.mkdir(parents=True, exist_ok=True)
    scenario_copy = workdir / f"{name}.xml"
    scenario_copy.write_bytes((SIPP_DIR / "uac.xml").read_bytes())
    rate_arg = f"{rate:.3f}".rstrip("0").rstrip(".")
    extra = [target, "-s", service, "-r", rate_arg, "-m", str(calls), "-d", str(hold_ms),
             "-l", str(limit or calls), "-recv_timeout", "5000", "-timeout", f"{int(timeout)}s",
             "-trace_rtt", "-rtt_freq", "1"]
    argv = sipp_argv(name, str(scenario_copy), free_port(), keys, extra)
    with (workdir / f"{name}.out").open("wb") as out:
        popen = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        deadline = time.monotonic() + timeout + 15
        try:
            while popen.poll() is None:
                if time.monotonic() > deadline:
                    os.killpg(popen.pid, signal.SIGKILL)
                    popen.wait()
                    break
                if callable(on_tick) and on_tick():
                    os.killpg(popen.pid, signal.SIGKILL)
                    popen.wait()
                    break
                time.sleep(0.5 if on_tick else 0.1)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
            raise
    stats = read_sipp_files(workdir, name)
    stats.exit_code = popen.returncode
    return stats


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]
