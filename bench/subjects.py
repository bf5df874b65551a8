"""What `python -m bench` puts load on: the engine (one process, or one per core behind Kamailio's dispatcher) and the
reference peers (a SIPp far end directly, Kamailio as a stateful proxy, sippy's b2bua_simple).

A subject starts its long-lived processes once (`start()`), then for every load step starts a fresh SIPp far end
(`far_end()`: the engine's 401-challenging trunk, or the plain far end of the peers) so each step's counters are its
own. `target` is where the load caller sends INVITEs; `cpu_pids()` is whose CPU a step is charged to;
`check_step()` reads what only the subject knows (the engine's retransmission counter, the app's hangup callbacks).
"""

from __future__ import annotations

import contextlib
import glob
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .procs import (
    HOST,
    ROOT,
    Proc,
    SippServer,
    SippStats,
    free_port,
    http_get,
    http_post,
    wait_http,
    wait_udp_listening,
)

NUMBER = "15551234567"


def kamailio_modules() -> str | None:
    for pattern in ("/usr/lib/*/kamailio/modules/dispatcher.so", "/usr/lib/kamailio/modules/dispatcher.so",
                    "/usr/local/lib*/kamailio/modules/dispatcher.so", "/usr/lib64/kamailio/modules/dispatcher.so"):
        found = sorted(glob.glob(pattern))
        if found:
            return str(Path(found[0]).parent)
    return None


def kamailio_binary() -> str | None:
    return shutil.which("kamailio") or ("/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None)


@dataclass
class EngineOptions:
    log_level: str = "warning"
    log_json: bool = True
    uvloop: bool = False
    gc_freeze: bool = True  # the daemon's default (engine/daemon.py)
    gc_threshold: tuple[int, int, int] | None = None

    @property
    def label(self) -> str:
        parts = [f"log {self.log_level}"]
        if not self.gc_freeze:
            parts.append("no gc.freeze")
        if self.gc_threshold:
            parts.append("gc threshold " + "/".join(map(str, self.gc_threshold)))
        if self.uvloop:
            parts.append("uvloop")
        return ", ".join(parts)


@dataclass
class StepCheck:
    retransmissions: int = 0
    hangups_missing: int = 0
    notes: list[str] = field(default_factory=list)


class Subject:
    name = ""
    label = ""
    far_scenario = "uas.xml"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()
        self.procs: list[Proc] = []
        self.far_port = free_port()
        self.target = ""
        self._step = 0
        self.dirty = False  # a step left calls up: restart before the next one

    def restart(self) -> None:
        self.stop()
        self.start()
        self.dirty = False

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    def cpu_pids(self) -> list[int]:
        return [pid for proc in self.procs for pid in proc.pids()]

    def far_end(self, keys: dict[str, str]) -> SippServer:
        self._step += 1
        return SippServer(self.workdir / "steps", f"far{self._step:03d}", self.far_scenario, self.far_port, keys)

    def before_step(self) -> None:
        """Reset per-step counters (the app's)."""

    def check_step(self, calls: int) -> StepCheck:
        return StepCheck()

    def describe(self) -> str:
        return " ; ".join(" ".join(p.argv) for p in self.procs)


class SippDirect(Subject):
    name, label = "sipp", "SIPp far end directly (harness ceiling)"

    def start(self) -> None:
        self.target = f"{HOST}:{self.far_port}"

    def describe(self) -> str:
        return "(no middle: the load caller talks to the SIPp far end)"


class KamailioProxy(Subject):
    name, label = "kamailio", "Kamailio stateful proxy (tm, record-route, 2 workers)"

    def __init__(self, workdir: Path, children: int = 2) -> None:
        super().__init__(workdir)
        self.children = children

    def start(self) -> None:
        port = free_port()
        mpath = kamailio_modules()
        binary = kamailio_binary()
        if mpath is None or binary is None:
            raise RuntimeError("kamailio is not installed (apt-get install kamailio)")
        cfg = (Path(__file__).parent / "kamailio" / "proxy.cfg").read_text()
        for marker, value in (("@LISTEN@", f"udp:{HOST}:{port}"), ("@MPATH@", mpath),
                              ("@NEXT_HOP@", f"{HOST}:{self.far_port}"), ("@CHILDREN@", str(self.children))):
            cfg = cfg.replace(marker, value)
        run = self.workdir / "kamailio"
        run.mkdir(parents=True, exist_ok=True)
        (run / "kamailio.cfg").write_text(cfg)
        self.procs.append(Proc("kamailio", [binary, "-f", str(run / "kamailio.cfg"), "-DD", "-E", "-Y", str(run),
                                            "-w", str(run), "-P", str(run / "kamailio.pid"), "-m", "256", "-M", "16"],
                               self.workdir))
        wait_udp_listening(port)
        time.sleep(0.5)  # workers forked
        self.target = f"{HOST}:{port}"


class Sippy(Subject):
    name, label = "sippy", "sippy b2bua_simple (Python B2BUA)"

    def start(self) -> None:
        for attempt in range(3):  # the free port can be taken before sippy binds it (EADDRINUSE): another one
            port = free_port()
            proc = Proc("sippy", [sys.executable, "-m", "sippy.b2bua_simple", "-f", "-l", HOST, "-p", str(port),
                                  "-n", f"{HOST}:{self.far_port}"], self.workdir)
            self.procs.append(proc)
            try:
                wait_udp_listening(port)
            except TimeoutError:
                proc.stop()
                self.procs.remove(proc)
                if attempt == 2:
                    raise
                continue
            self.target = f"{HOST}:{port}"
            return


class App:
    """bench/app.py in its own process."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.proc = Proc("app", [sys.executable, "-m", "bench.app", "--port", str(self.port), "--number", NUMBER],
                         workdir, env=_env())
        wait_http(f"http://{HOST}:{self.port}/stats")

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def stats(self) -> dict[str, int]:
        return json.loads(http_get(self.url("/stats")))

    def reset(self) -> None:
        http_post(self.url("/reset"))


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class EngineProcess:
    """`softswitch serve` (as `python -m engine.cli serve`) with a generated config; bench/serve.py for the variants
    (uvloop, no gc.freeze, GC thresholds)."""

    def __init__(self, workdir: Path, name: str, app: App, trunk_port: int, options: EngineOptions,
                 rtp_range: tuple[int, int]) -> None:
        workdir = workdir.resolve()
        self.workdir = workdir
        self.name = name
        self.sip_port = free_port()
        self.http_port = free_port()
        self.options = options
        db = workdir / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        config = workdir / f"{name}.toml"
        config.write_text(f"""\
[sip]
listen = ["udp:{HOST}:{self.sip_port}"]
public_address = "{HOST}"
rtp_port_min = {rtp_range[0]}
rtp_port_max = {rtp_range[1]}
[http]
listen = "{HOST}:{self.http_port}"
[inbound]
answer_url = "{app.url('/answer')}"
hangup_url = "{app.url('/hangup')}"
[[trunks]]
name = "carrier"
uri = "sip:{HOST}:{trunk_port}"
default = true
[limits]
max_calls = 100000
max_cps = 100000
[storage]
path = "{db}"
recordings_dir = "{workdir / (name + '-recordings')}"
""")
        serve = ["serve", "--config", str(config), "--log-level", options.log_level, "--drain-timeout", "0"]
        if options.log_json:
            serve.append("--log-json")
        if options.uvloop or not options.gc_freeze or options.gc_threshold:
            argv = [sys.executable, "-m", "bench.serve"]
            argv += ["--uvloop"] if options.uvloop else []
            argv += ["--no-gc-freeze"] if not options.gc_freeze else []
            argv += ["--gc-threshold", *map(str, options.gc_threshold)] if options.gc_threshold else []
            argv += serve
        else:
            argv = [sys.executable, "-m", "engine.cli", *serve]
        self.proc = Proc(name, argv, workdir, env=_env())
        try:
            wait_http(f"http://{HOST}:{self.http_port}/health")
        except TimeoutError:
            self.proc.stop()
            raise RuntimeError(f"engine did not start:\n{self.proc.tail()}") from None

    def metric(self, name: str) -> float:
        total = 0.0
        for line in http_get(f"http://{HOST}:{self.http_port}/metrics").splitlines():
            if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
                with contextlib.suppress(ValueError):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def health(self) -> dict[str, object]:
        return json.loads(http_get(f"http://{HOST}:{self.http_port}/health"))

    def wait_idle(self, timeout: float = 30.0) -> int:
        """Until no call is live; returns the calls still live when it gave up."""
        deadline = time.monotonic() + timeout
        while True:
            calls = int(self.health().get("calls", 0))  # type: ignore[call-overload]
            if calls == 0 or time.monotonic() > deadline:
                return calls
            time.sleep(0.2)


class Engines(Subject):
    """`count` engines; with more than one, Kamailio's dispatcher (tests/kamailio/kamailio.cfg) spreads the calls."""

    far_scenario = "uas_trunk_401.xml"

    def __init__(self, workdir: Path, count: int = 1, options: EngineOptions | None = None) -> None:
        super().__init__(workdir)
        self.count = count
        self.options = options or EngineOptions()
        self.name = "engine" if count == 1 else f"engine x{count}"
        self.label = ("softswitch, 1 process" if count == 1 else
                      f"softswitch, {count} processes behind Kamailio's dispatcher")
        if self.options != EngineOptions():
            self.name += f" ({self.options.label})"
        self.engines: list[EngineProcess] = []
        self.app: App | None = None
        self._retrans_before = 0.0

    def start(self) -> None:
        self.engines = []
        self.app = App(self.workdir)
        self.procs.append(self.app.proc)
        for i in range(self.count):
            base = 30000 + i * 10000
            engine = EngineProcess(self.workdir, f"engine{i + 1}", self.app, self.far_port, self.options,
                                   (base, base + 9999))
            self.engines.append(engine)
            self.procs.append(engine.proc)
        if self.count == 1:
            self.target = f"{HOST}:{self.engines[0].sip_port}"
            return
        self.target = self._start_dispatcher()

    def _start_dispatcher(self) -> str:
        mpath, binary = kamailio_modules(), kamailio_binary()
        if mpath is None or binary is None:
            raise RuntimeError("kamailio is not installed (apt-get install kamailio)")
        templates = ROOT / "tests" / "kamailio"
        run = self.workdir / "dispatcher"
        run.mkdir(parents=True, exist_ok=True)
        port = free_port()
        lines = [f"1 sip:{HOST}:{e.sip_port} 0 0 duid=engine{i + 1}" for i, e in enumerate(self.engines)]
        (run / "dispatcher.list").write_text("\n".join(lines) + "\n")
        cfg = (templates / "kamailio.cfg").read_text()
        for marker, value in (("@LISTEN@", f"udp:{HOST}:{port}"), ("@MPATH@", mpath), ("@RUNDIR@", str(run)),
                              ("@DISPATCHER_LIST@", str(run / "dispatcher.list"))):
            cfg = cfg.replace(marker, value)
        # The template logs every request at INFO (the scale test reads those lines); under load: warnings only.
        cfg = re.sub(r"(?m)^debug=\d+", "debug=1", cfg)
        (run / "kamailio.cfg").write_text(cfg)
        self.procs.append(Proc("dispatcher", [binary, "-f", str(run / "kamailio.cfg"), "-DD", "-E", "-Y", str(run),
                                              "-w", str(run), "-P", str(run / "kamailio.pid"), "-m", "256", "-M",
                                              "16"], self.workdir))
        wait_udp_listening(port)
        time.sleep(2.5)  # the dispatcher's first OPTIONS probes mark the engines up
        return f"{HOST}:{port}"

    def engine_pids(self) -> list[int]:
        return [pid for e in self.engines for pid in e.proc.pids()]

    def before_step(self) -> None:
        assert self.app is not None
        self.app.reset()
        self._retrans_before = sum(e.metric("softswitch_sip_retransmissions_total") for e in self.engines)

    def check_step(self, calls: int) -> StepCheck:
        assert self.app is not None
        check = StepCheck()
        for engine in self.engines:
            left = engine.wait_idle(8)
            if left:
                check.notes.append(f"{engine.name}: {left} calls still live")
                self.dirty = True
        deadline = time.monotonic() + 10
        while True:
            stats = self.app.stats()
            if stats.get("hangup", 0) >= calls or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        check.hangups_missing = max(0, calls - stats.get("hangup", 0))
        causes = {k[6:]: v for k, v in stats.items() if k.startswith("cause:") and k != "cause:NORMAL_CLEARING"}
        if causes:
            check.notes.append(f"hangup causes {causes}")
        after = sum(e.metric("softswitch_sip_retransmissions_total") for e in self.engines)
        check.retransmissions = int(after - self._retrans_before)
        return check

    def describe(self) -> str:
        return " ; ".join(" ".join(e.proc.argv) for e in self.engines)


def far_stats_ok(stats: SippStats) -> bool:
    return stats.failed == 0 and stats.unexpected == 0
