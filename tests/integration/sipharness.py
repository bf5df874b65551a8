"""Helpers for integration tests against real SIP peers (SIPp, baresip) on loopback.

* `free_port()` / `free_port_block(n)`: ports free on UDP *and* TCP at the moment of asking (bound to port 0 and
  released); every port handed out in this process is remembered so two peers of one run never share one.
* `render_scenario(...)`: copies a scenario from tests/sipp/ into the test's tmp dir, replacing `@KEY@` markers.
* `Sipp`: one SIPp process (`-m 1 -nostdin -trace_err -trace_msg`, never `-bg`) run as an asyncio subprocess;
  `await sipp.wait(timeout)` returns a `SippResult` (exit code + logs) and kills SIPp on timeout.
* `parse_trace(text)`: the SIP messages of a `-trace_msg` log, in order, with their direction.
* `collect_events(leg, ...)`: a leg's events up to (and including) `Ended`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from sip.leg import Ended, Leg, LegEvent

TESTS = Path(__file__).resolve().parents[1]
SIPP_DIR = TESTS / "sipp"
BARESIP_DIR = TESTS / "baresip"
HOST = "127.0.0.1"

# A static SDP offer/answer; media is not under test here (c= on loopback, a port nobody needs to listen on).
def make_sdp(port: int, user: str = "softswitch") -> str:
    return (
        "v=0\r\n"
        f"o={user} 1000 1000 IN IP4 {HOST}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {HOST}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 8 0 101\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=sendrecv\r\n"
    )


# -- ports --------------------------------------------------------------------------------------------------------
_handed_out: set[int] = set()


def _free_on_both(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port free on UDP and TCP right now (bind port 0 on UDP, then the same port on TCP; both released)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((HOST, 0))
            port = int(u.getsockname()[1])
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((HOST, port))
                except OSError:
                    continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found")


def free_port_block(n: int = 4) -> int:
    """First of `n` consecutive ports free on UDP and TCP (SIPp's -mp uses the port and the ones above it; an engine's
    RTP range). Blocks of 100 and more are searched below the kernel's ephemeral range: after a long run, the
    ephemeral range is dotted with sockets in TIME_WAIT and other tests' clients, and a block of hundreds is rarely
    free there; smaller blocks stay in the ephemeral range, so they never fragment the low one."""
    low = _ephemeral_start()
    large = n >= 100 and low - n > 10000
    for _ in range(400):
        if large:
            base = random.randrange(10000, low - n)
            if base in _handed_out or not _free_on_both(base):
                continue
        else:
            base = free_port()  # free on both, and already counted as handed out
        if base + n > 65535:
            continue
        if all(p not in _handed_out and _free_on_both(p) for p in range(base + 1, base + n)):
            _handed_out.update(range(base, base + n))
            return base
    raise RuntimeError(f"no block of {n} free ports found")


def _ephemeral_start() -> int:
    """The first port the kernel hands out for port-0 binds and outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _listening(port: int, transport: str) -> bool:
    """Whether something is bound to 127.0.0.1:`port` (UDP) / listening on it (TCP); read from /proc, so the
    check itself never takes the port away from the process we wait for."""
    table = "/proc/net/udp" if transport == "udp" else "/proc/net/tcp"
    want = f"{port:04X}"
    try:
        lines = Path(table).read_text().splitlines()[1:]
    except OSError:
        return True  # cannot tell: let the caller go on (retransmissions cover a late bind)
    for line in lines:
        fields = line.split()
        local, state = fields[1], fields[3]
        if local.rsplit(":", 1)[1] == want and (transport == "udp" or state == "0A"):
            return True
    return False


async def wait_listening(port: int, transport: str = "udp", timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not _listening(port, transport):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on {transport} port {port} after {timeout} s")
        await asyncio.sleep(0.02)


# -- scenarios ----------------------------------------------------------------------------------------------------
def render_scenario(name: str, dest_dir: Path, **subs: str | int) -> Path:
    """Copy tests/sipp/`name` into `dest_dir`, replacing each `@KEY@` with its value; returns the new path."""
    text = (SIPP_DIR / name).read_text(encoding="iso-8859-1")
    for key, value in subs.items():
        text = text.replace(f"@{key}@", str(value))
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise ValueError(f"{name}: unreplaced markers {sorted(set(leftover))}")
    out = dest_dir / name
    out.write_text(text, encoding="iso-8859-1")
    return out


# -- SIPp ---------------------------------------------------------------------------------------------------------
@dataclass
class SippResult:
    returncode: int
    messages: str  # -trace_msg log
    errors: str  # -trace_err log
    stdout: str
    timed_out: bool = False

    def describe(self) -> str:
        return (f"sipp exit={self.returncode} timed_out={self.timed_out}\n--- errors ---\n{self.errors[-4000:]}"
                f"\n--- stdout (tail) ---\n{self.stdout[-3000:]}\n--- messages (tail) ---\n{self.messages[-6000:]}")


@dataclass
class Sipp:
    """One SIPp run. `remote` is host:port for a UAC scenario (None for a UAS)."""

    scenario: Path
    workdir: Path
    remote: str | None = None
    transport: str = "udp"  # udp | tcp
    extra: list[str] = field(default_factory=list)
    name: str = "sipp"
    port: int = 0
    media_port: int = 0
    control_port: int = 0
    proc: asyncio.subprocess.Process | None = None

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.media_port = self.media_port or free_port_block(4)
        self.control_port = self.control_port or free_port()
        self.message_file = self.workdir / f"{self.name}_msg.log"
        self.error_file = self.workdir / f"{self.name}_err.log"
        self.stdout_file = self.workdir / f"{self.name}_stdout.log"

    @property
    def uri_host(self) -> str:
        return f"{HOST}:{self.port}"

    def argv(self) -> list[str]:
        args = ["sipp"]
        if self.remote:
            args.append(self.remote)
        args += [
            "-sf", str(self.scenario),
            "-i", HOST, "-p", str(self.port), "-mp", str(self.media_port), "-cp", str(self.control_port),
            "-t", "t1" if self.transport == "tcp" else "u1",
            "-m", "1", "-nostdin",
            "-trace_err", "-error_file", str(self.error_file),
            "-trace_msg", "-message_file", str(self.message_file),
        ]
        return args + self.extra

    async def start(self) -> Sipp:
        """Start SIPp; for a UAS scenario, return once it is bound to its SIP port."""
        with self.stdout_file.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv(), cwd=self.workdir, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        if self.remote is None:
            deadline = time.monotonic() + 5
            while not _listening(self.port, self.transport):
                if self.proc.returncode is not None or time.monotonic() > deadline:
                    result = await self.wait(1)
                    raise RuntimeError("SIPp did not start listening\n" + result.describe())
                await asyncio.sleep(0.02)
        return self

    async def wait(self, timeout: float = 15.0) -> SippResult:
        """Wait for SIPp to exit (killing it after `timeout` s) and collect its logs."""
        assert self.proc is not None, "start() first"
        timed_out = False
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            timed_out = True
            self.kill()
            await self.proc.wait()
        return SippResult(
            returncode=self.proc.returncode if self.proc.returncode is not None else -999,
            messages=_read(self.message_file),
            errors=_read(self.error_file),
            stdout=_read(self.stdout_file),
            timed_out=timed_out,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


# -- the -trace_msg log -----------------------------------------------------------------------------------------
@dataclass
class TracedMessage:
    direction: str  # "sent" | "received" (from SIPp's point of view)
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def method(self) -> str | None:
        """Request method, or None for a response."""
        head = self.first_line
        return None if head.startswith("SIP/2.0") else head.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        head = self.first_line
        return int(head.split()[1]) if head.startswith("SIP/2.0") else None

    def _head_lines(self) -> list[str]:
        return self.text.replace("\r\n", "\n").split("\n\n", 1)[0].split("\n")[1:]

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        return values[0] if values else None

    def headers(self, name: str) -> list[str]:
        name = name.lower()
        out = []
        for line in self._head_lines():
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name:
                out.append(value.strip())
        return out

    @property
    def body(self) -> str:
        parts = self.text.replace("\r\n", "\n").split("\n\n", 1)
        return parts[1] if len(parts) > 1 else ""


_ENTRY = re.compile(r"^-{10,}.*$", re.M)
_DIRECTION = re.compile(r"^\s*(?:UDP|TCP|TLS|SCTP)\s+message\s+(sent|received)", re.I)


def parse_trace(text: str) -> list[TracedMessage]:
    """Split a SIPp -trace_msg log into messages. Each entry is a dashed separator line, a
    '<TRANSPORT> message sent|received ...' line, then the SIP message."""
    messages = []
    for chunk in _ENTRY.split(text):
        chunk = chunk.strip("\n")
        lines = chunk.split("\n")
        if not lines:
            continue
        m = _DIRECTION.match(lines[0])
        if not m:
            continue
        body = "\n".join(lines[1:]).strip("\n")
        if not body.strip():
            continue
        messages.append(TracedMessage(m.group(1).lower(), body + "\n"))
    return messages


def via_branch(via: str) -> str:
    m = re.search(r";\s*branch=([^;,\s]+)", via)
    return m.group(1) if m else ""


def header_param(value: str, name: str) -> str:
    m = re.search(rf";\s*{name}=([^;,\s>]+)", value)
    return m.group(1) if m else ""


# -- legs -----------------------------------------------------------------------------------------------------------
async def collect_events(leg: Leg, timeout: float = 15.0, until: type | tuple[type, ...] = Ended) -> list[LegEvent]:
    """The leg's events up to and including the first of type `until` (Ended by default)."""
    events: list[LegEvent] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError(f"no {until} within {timeout} s; got {events}")
        try:
            event = await leg.next_event(left)
        except TimeoutError:
            raise TimeoutError(f"no {until} within {timeout} s; got {events}") from None
        events.append(event)
        if isinstance(event, (until, Ended)):
            return events


# -- baresip ------------------------------------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def render_baresip(role: str, dest: Path, sip_port: int, rtp_base: int, rtp_count: int = 10) -> Path:
    """A per-test copy of tests/baresip/`role` (callee|caller): @HARNESS@ -> the tests/ folder (it holds
    baresip/tone_8k.wav), sip_listen and the account on `sip_port`, rtp_ports on [rtp_base, rtp_base+rtp_count]."""
    out = dest / role
    out.mkdir(parents=True)
    for name in ("config", "accounts"):
        text = (BARESIP_DIR / role / name).read_text().replace("@HARNESS@", str(TESTS))
        text = re.sub(r"127\.0\.0\.1:\d+", f"{HOST}:{sip_port}", text)
        text = re.sub(r"^(rtp_ports\s+)\S+$", rf"\g<1>{rtp_base}-{rtp_base + rtp_count}", text, flags=re.M)
        (out / name).write_text(text)
    return out


@dataclass
class Baresip:
    """One headless baresip (`-f config_dir -n 127.0.0.1 -t seconds`), output in `<config_dir>.log`."""

    config_dir: Path
    sip_port: int
    quit_after: int = 10
    commands: list[str] = field(default_factory=list)
    sip_trace: bool = True  # -s: SIP messages in the output (for failure reports)
    proc: asyncio.subprocess.Process | None = None

    def __post_init__(self) -> None:
        self.log_file = self.config_dir.with_suffix(".log")

    async def start(self) -> Baresip:
        args = ["baresip", "-f", str(self.config_dir), "-n", HOST, "-t", str(self.quit_after)]
        if self.sip_trace:
            args.append("-s")
        for command in self.commands:
            args += ["-e", command]
        # baresip prints through stdio: into a file that is block-buffered, so lines we wait for could sit in
        # its buffer for seconds. stdbuf makes stdout/stderr line-buffered.
        if shutil.which("stdbuf"):
            args = ["stdbuf", "-oL", "-eL", *args]
        with self.log_file.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *args, cwd=self.config_dir, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        await self.wait_for("baresip is ready", 5)
        await wait_listening(self.sip_port, "udp", 5)
        return self

    @property
    def output(self) -> str:
        return _ANSI.sub("", _read(self.log_file))

    async def wait_for(self, text: str, timeout: float) -> str:
        """Wait until `text` shows in the output; returns the output (raises with it on timeout or exit)."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if time.monotonic() > deadline or (self.proc is not None and self.proc.returncode is not None
                                               and text not in self.output):
                raise AssertionError(f"baresip never printed {text!r}; output:\n{self.output[-4000:]}")
            await asyncio.sleep(0.05)
        return self.output

    async def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.kill()
            await self.proc.wait()
        assert self.proc.returncode is not None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
