"""`python -m bench`: how fast softswitch does its job, measured with SIPp, next to reference peers in the same run.

Phases (each prints its progress):
1. For each subject — the engine (one process), the engine with one process per core behind Kamailio's dispatcher,
   a SIPp far end directly (the harness ceiling), Kamailio as a stateful proxy, sippy's b2bua_simple — a fixed
   100 CPS step (setup latency p50/p99, CPU per call), then the search for the highest clean rate (bench/load.py).
2. Concurrent bridged calls with RTP both ways on a fresh engine (bench/rtpmeter.c), and RSS per active call.
3. (full mode) Engine variants at 100 CPS: log level info vs warning, without the daemon's gc.freeze(), larger GC
   thresholds, uvloop.
4. (full mode) A py-spy profile of the engine at 100 CPS: its CPU per call by layer (python -m bench.profile).
Writes bench/results.json, bench/RESULTS.md and bench/results.png (`--out DIR` elsewhere), and a copy of the JSON
with every process's logs under var/bench/<date>/.

Budget: about 12-15 min in full; `--quick` (shorter steps, coarser search, no variants) about 3 min.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from . import report
from .load import RtpMeter, Step, find_max_cps, media_ramp, run_step
from .procs import ROOT
from .subjects import EngineOptions, Engines, KamailioProxy, SippDirect, Sippy, Subject

SUBJECTS = ("engine", "engine-x2", "sipp", "kamailio", "sippy")

# (start rate, search ceiling) per subject; the search multiplies by 1.5 from the start.
SEARCH = {
    "engine": (100, 2000),
    "engine-x2": (150, 4000),
    "sipp": (2000, 60000),
    "kamailio": (1000, 30000),
    "sippy": (40, 2000),
}


class Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, text: str) -> None:
        e = time.monotonic() - self.t0
        print(f"[{int(e // 60):2d}:{int(e % 60):02d}] {text}", flush=True)


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0.0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_gb": mem, "kernel": platform.release(),
            "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def versions() -> dict[str, str]:
    def run(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    out: dict[str, str] = {}
    rev = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
    dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "engine", "sip", "media"]).strip()
    out["softswitch"] = f"{rev}{' + uncommitted engine/sip/media changes' if dirty else ''}" or "?"
    out["Python"] = platform.python_version()
    for line in run(["sipp", "-v"]).splitlines():
        if "SIPp v" in line:
            out["SIPp"] = line.strip().split()[1].rstrip(".")
            break
    kam = shutil.which("kamailio") or "/usr/sbin/kamailio"
    first = run([kam, "-v"]).splitlines()
    if first:  # "version: kamailio 5.6.3 (x86_64/linux) ..."
        words = first[0].split()
        out["Kamailio"] = words[2] if len(words) > 2 else first[0]
    for dist in ("sippy", "aiohttp", "httpx", "httpx-aiohttp", "structlog", "uvloop"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def make_subject(name: str, workdir: Path) -> Subject:
    wd = workdir / name
    wd.mkdir(parents=True, exist_ok=True)
    if name == "engine":
        return Engines(wd, 1)
    if name == "engine-x2":
        return Engines(wd, 2)
    if name == "sipp":
        return SippDirect(wd)
    if name == "kamailio":
        return KamailioProxy(wd)
    if name == "sippy":
        return Sippy(wd)
    raise ValueError(name)


def cpu_of(subject: Subject) -> str:
    if isinstance(subject, Engines):
        return "engine process" if subject.count == 1 else f"{subject.count} engine processes"
    return {"sipp": "none in the middle", "kamailio": "all Kamailio processes", "sippy": "the sippy process"}.get(
        subject.name, subject.name)


def cpu_pids(subject: Subject) -> list[int]:
    """Whose CPU a step is charged to: the engines (not the app); the peers' own processes."""
    if isinstance(subject, Engines):
        return subject.engine_pids()
    return subject.cpu_pids()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="about 3 minutes: shorter steps, coarser search")
    ap.add_argument("--only", nargs="+", choices=SUBJECTS, help="measure only these subjects")
    ap.add_argument("--no-media", action="store_true", help="skip the concurrent-calls-with-media phase")
    ap.add_argument("--variants", action=argparse.BooleanOptionalAction, default=None,
                    help="engine variants at 100 CPS (log level, no gc.freeze, uvloop); default: on in full mode")
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                    help="py-spy profile of the engine at 100 CPS (python -m bench.profile); default: on in full mode")
    ap.add_argument("--media-calls", type=int, help="target of the media ramp (default 1000; quick 600)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                    help="where RESULTS.md, results.json and results.png go (default: bench/)")
    ap.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                    help="no measurement: rewrite RESULTS.md and results.png from a results.json")
    args = ap.parse_args(argv)
    if args.render:
        return render(args.render, args.out)
    for tool in ("sipp", "cc"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found (apt-get install sip-tester gcc)", file=sys.stderr)
            return 2
    quick = args.quick
    step_s, confirm_s, precision = (3.0, 0.0, 0.25) if quick else (5.0, 15.0, 0.08)
    latency_s = 6.0 if quick else 20.0
    do_variants = args.variants if args.variants is not None else not quick
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = ROOT / "var" / "bench" / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    log = Clock()
    command = "python -m bench" + (" " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])) if (
        argv or sys.argv[1:]) else "")
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "mode": "quick" if quick else "full",
                               "command": command, "machine": machine(), "versions": versions(), "subjects": {},
                               "commands": []}
    log(f"softswitch benchmark ({results['mode']}), work files in {workdir.relative_to(ROOT)}")
    log(f"machine: {results['machine']['nproc']} cores, {results['machine']['cpu_model']}, load average "
        f"{results['machine']['loadavg_start']}")
    names = args.only or list(SUBJECTS)
    try:
        for name in names:
            subject = make_subject(name, workdir)
            log(f"== {subject.label}")
            try:
                subject.start()
            except Exception as exc:
                log(f"[{name}] cannot start: {exc}")
                results["subjects"][subject.name] = {"label": subject.label, "error": str(exc), "command": "",
                                                     "cpu_of": cpu_of(subject)}
                subject.stop()
                continue
            try:
                pids = cpu_pids(subject)
                lat = run_step(subject, 100, latency_s if name == "engine" else min(latency_s, 5.0), cpu_pids=pids)
                log(f"[{subject.name}] latency step: {lat.line()}")
                start, ceiling = SEARCH[name]
                search = find_max_cps(subject, start=start, ceiling=ceiling, step_s=step_s, confirm_s=confirm_s,
                                      precision=precision, progress=log, cpu_pids=pids)
                log(f"[{subject.name}] max clean CPS: {'>= ' if search.capped else ''}{search.max_cps:g}")
                results["subjects"][subject.name] = {
                    "label": subject.label, "command": subject.describe(), "cpu_of": cpu_of(subject),
                    "latency_100": lat.as_dict(), "search": search.as_dict()}
            finally:
                subject.stop()
        if not args.no_media and (args.only is None or "engine" in names):
            results["media"] = media_phase(workdir, quick, args.media_calls, log)
        if do_variants and (args.only is None or "engine" in names):
            results["variants"] = variants_phase(workdir, 10.0 if not quick else 5.0, log)
        do_profile = args.profile if args.profile is not None else not quick
        if do_profile and (args.only is None or "engine" in names):
            results["profile"] = profile_phase(workdir, log)
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    results["ratios"] = ratios(results)
    results["targets"] = targets(results)
    results["commands"] = [
        "load caller: `sipp TARGET -sf bench/sipp/uac.xml -s 15551230000 -r RATE -m RATE*SECONDS -d 100 -l LIMIT "
        "-recv_timeout 5000 -buff_size 2097152 -trace_stat -trace_counts -trace_rtt -rtt_freq 1 ...`",
        "engine trunk: `sipp -sf bench/sipp/uas_trunk_401.xml -p PORT -buff_size 2097152 ...` (401 challenge, "
        "digest checked, 200 echoing Record-Route, waits for the BYE); peers' far end: `bench/sipp/uas.xml`",
        "webhook app: `python -m bench.app --port PORT` (aiohttp, its own process)",
        "media far ends: `var/bench/rtpmeter PORT_A PORT_B` (built from bench/rtpmeter.c with cc -O2)",
        "Kamailio proxy: bench/kamailio/proxy.cfg; dispatcher: tests/kamailio/kamailio.cfg with debug=1",
    ]
    results["elapsed_s"] = time.monotonic() - log.t0
    write(results, args.out, workdir, log)
    for row in results["targets"]:
        log(f"target {row['target']}: {row['measured']} -> {'met' if row['met'] else 'NOT met'}")
    return 0


def media_phase(workdir: Path, quick: bool, calls: int | None, log: Clock) -> dict[str, Any]:
    wd = workdir / "media"
    wd.mkdir(parents=True, exist_ok=True)
    subject = Engines(wd, 1)
    subject.name = "engine (media)"
    target = calls or (600 if quick else 1000)
    rate = 40.0 if quick else 25.0
    log(f"== concurrent bridged calls with RTP both ways: calls at {rate:g} CPS, held, up to {target}")
    meter = RtpMeter(wd)
    try:
        subject.start()
        ramp = media_ramp(subject, meter, target_calls=target, rate=rate, plateau_s=4.0 if quick else 6.0,
                          loss_limit=0.01, progress=log)
    finally:
        subject.stop()
        meter.stop()
    log(f"[media] stopped: {ramp.stopped_because}; max concurrent bridged calls with < 1 % lost/late: "
        f"{'>= ' if ramp.capped else ''}{ramp.max_concurrent_clean} (peak {ramp.peak_concurrent}); RSS per call "
        f"{ramp.rss_per_call_kb:.0f} KB (slope), {ramp.rss_per_call_kb_peak:.0f} KB (last clean window)")
    return ramp.as_dict()


def variants_phase(workdir: Path, seconds: float, log: Clock) -> list[dict[str, Any]]:
    rows = []
    variants = [EngineOptions(), EngineOptions(log_level="info"), EngineOptions(gc_freeze=False),
                EngineOptions(gc_threshold=(10000, 20, 100))]
    try:
        import uvloop  # noqa: F401

        variants += [EngineOptions(uvloop=True)]
    except ImportError:
        log("[variants] uvloop is not installed (pip install uvloop): skipped")
    log("== engine variants at 100 CPS")
    for options in variants:
        wd = workdir / ("variant-" + options.label.replace(" ", "-").replace(",", "").replace(".", ""))
        wd.mkdir(parents=True, exist_ok=True)
        subject = Engines(wd, 1, options)
        try:
            subject.start()
            step: Step = run_step(subject, 100, seconds, cpu_pids=subject.engine_pids())
        finally:
            subject.stop()
        log(f"[variant: {options.label}] {step.line()}")
        rows.append({"variant": options.label, **step.as_dict()})
    return rows


def profile_phase(workdir: Path, log: Clock) -> str | None:
    if shutil.which("py-spy") is None:
        log("[profile] py-spy is not installed (pip install -e '.[bench]'): skipped")
        return None
    from . import profile

    log("== py-spy profile of the engine at 100 CPS (15 s)")
    out = workdir / "profile"
    try:
        profile.main(["--rate", "100", "--seconds", "15", "--out", str(out)])
    except Exception as exc:  # a profile is a bonus: never lose the run for it
        log(f"[profile] failed: {exc}")
        return None
    text = (out / "profile.txt").read_text()
    log("[profile] " + text.splitlines()[2] if len(text.splitlines()) > 2 else "[profile] done")
    return text


def ratios(r: dict[str, Any]) -> dict[str, float | None]:
    def max_cps(name: str) -> float | None:
        return ((r["subjects"].get(name) or {}).get("search") or {}).get("max_cps") or None

    engine = max_cps("engine")
    out: dict[str, float | None] = {}
    for name, label in (("sipp", "engine/ceiling"), ("kamailio", "engine/Kamailio"), ("sippy", "engine/sippy")):
        other = max_cps(name)
        out[label] = engine / other if engine and other else None
    x2 = max_cps("engine x2")
    out["engine x2/engine"] = x2 / engine if x2 and engine else None
    return out


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    t = report.TARGETS
    rows: list[dict[str, Any]] = []
    subjects = r["subjects"]

    def search(name: str) -> dict[str, Any]:
        return (subjects.get(name) or {}).get("search") or {}

    engine = search("engine")
    if engine:
        rows.append({"target": f">= {t['cps']:g} CPS of the full Dial flow, 1 engine process, 0 failures",
                     "measured": f"{engine['max_cps']:g} CPS", "met": engine["max_cps"] >= t["cps"]})
    sippy = search("sippy")
    if engine and sippy and sippy.get("max_cps"):
        ratio = engine["max_cps"] / sippy["max_cps"]
        rows.append({"target": f">= {t['cps_vs_sippy']:g}x sippy's b2bua_simple", "measured": f"{ratio:.2f}x",
                     "met": ratio >= t["cps_vs_sippy"]})
    x2 = search("engine x2")
    if x2:
        rows.append({"target": f">= {t['cps_per_core']:g} CPS, one engine per core behind Kamailio's dispatcher",
                     "measured": f"{x2['max_cps']:g} CPS", "met": x2["max_cps"] >= t["cps_per_core"]})
    media = r.get("media")
    if media:
        rows.append({"target": f">= {t['concurrent']} concurrent bridged calls with media, < 1 % lost or late",
                     "measured": f"{'>= ' if media['capped'] else ''}{media['max_concurrent_clean']}",
                     "met": media["max_concurrent_clean"] >= t["concurrent"]})
        rows.append({"target": f"< {t['rss_kb']:g} KB RSS per active call", "measured":
                     f"{media['rss_per_call_kb']:.0f} KB (slope), {media['rss_per_call_kb_peak']:.0f} KB (peak)",
                     "met": max(media["rss_per_call_kb"], media["rss_per_call_kb_peak"]) < t["rss_kb"]})
    lat = (subjects.get("engine") or {}).get("latency_100")
    if lat:
        rows.append({"target": f"p99 setup < {t['p99_ms']:g} ms at 100 CPS", "measured":
                     f"p50 {lat['p50_ms']:g} / p99 {lat['p99_ms']:g} ms" if lat["p99_ms"] is not None else "-",
                     "met": lat["p99_ms"] is not None and lat["p99_ms"] < t["p99_ms"]})
    return rows


def render(path: Path, out: Path) -> int:
    """Outputs again from stored figures. A search whose confirmation never held (runs before the rule that reports
    the best short clean step then) gets that step's rate, marked unconfirmed (confirmed for 0 s)."""
    results = json.loads(path.read_text())
    for s in results["subjects"].values():
        search = s.get("search") or {}
        if search and not search.get("max_cps") and not search.get("confirmed_seconds"):
            search["max_cps"] = max((st["rate"] for st in search["steps"] if st["passed"]), default=0.0)
    results["ratios"] = ratios(results)
    results["targets"] = targets(results)
    results["rendered"] = f"python -m bench --render {path}"
    write(results, out, None, Clock())
    return 0


def write(results: dict[str, Any], out: Path, workdir: Path | None, log: Clock) -> None:
    text = json.dumps(results, indent=1, default=str)
    if workdir is not None:
        (workdir / "results.json").write_text(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(text)
    (out / "RESULTS.md").write_text(report.markdown(results))
    try:
        report.plot(results, out / "results.png")
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[bench]'): no plot")
    log(f"wrote {out / 'RESULTS.md'}, {out / 'results.json'}, {out / 'results.png'}")


if __name__ == "__main__":
    sys.exit(main())
