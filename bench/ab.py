"""Old code against new code, alternated: `python -m bench.ab [--rate R] [--seconds S] [--rounds N] REV...`.

Each REV is a git revision (HEAD~2, a branch, a commit) or `.` for the working tree, optionally with `:uvloop`. For a
revision, a detached git worktree is made under var/bench/ab/ (reused on later runs). Every round runs each arm once,
in order, on a fresh engine (the same setup as `python -m bench`: webhook app, 401-challenging SIPp trunk, SIPp
caller) at a fixed rate, and reads the engine's user and system CPU time from /proc. The arms alternate so that a
noisy neighbour on this shared machine hits all of them alike; compare the medians printed at the end (ratios,
not absolute figures, carry across runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from .procs import ROOT

# One arm in a child process, so each imports its own tree's bench/ and engine (PYTHONPATH = that tree).
_ARM = r"""
import json, sys
tree, uvloop, rate, seconds = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3]), float(sys.argv[4])
sys.path.insert(0, tree)
from pathlib import Path
from bench.load import run_step
from bench.subjects import EngineOptions, Engines

def times(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) / 100, int(fields[12]) / 100

work = Path(sys.argv[5])
work.mkdir(parents=True, exist_ok=True)
subject = Engines(work, 1, EngineOptions(log_level="warning", uvloop=uvloop))
subject.start()
try:
    run_step(subject, rate, 2.0)  # warm-up
    pid = subject.engines[0].proc.pid
    u0, s0 = times(pid)
    step = run_step(subject, rate, seconds, cpu_pids=subject.engine_pids())
    u1, s1 = times(pid)
    print(json.dumps({"cpu": step.cpu_ms_per_call, "user": 1000 * (u1 - u0) / step.calls,
                      "sys": 1000 * (s1 - s0) / step.calls, "p99": step.p99_ms, "passed": step.passed}))
finally:
    subject.stop()
"""


def tree_of(rev: str) -> Path:
    """The source tree of a revision: the working tree for '.', else a detached worktree (made once)."""
    if rev == ".":
        return ROOT
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    path = ROOT / "var" / "bench" / "ab" / commit
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT, check=True,
                       capture_output=True)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    ap.add_argument("arms", nargs="+", metavar="REV[:uvloop]")
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    trees = {arm: tree_of(arm.partition(":")[0]) for arm in args.arms}
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in args.arms}
    for r in range(args.rounds):
        for arm in args.arms:
            uvloop = arm.partition(":")[2] == "uvloop"
            work = ROOT / "var" / "bench" / "ab" / "run"
            proc = subprocess.run([sys.executable, "-c", _ARM, str(trees[arm]), "1" if uvloop else "0",
                                   str(args.rate), str(args.seconds), str(work)], capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if not lines:
                print(f"round {r + 1} {arm}: failed\n{proc.stderr[-2000:]}", flush=True)
                continue
            d = json.loads(lines[-1])
            results[arm].append(d)
            print(f"round {r + 1} {arm}: engine CPU {d['cpu']:.2f} ms/call (user {d['user']:.2f}, "
                  f"system {d['sys']:.2f}), p99 setup {d['p99']} ms{'' if d['passed'] else ', NOT clean'}",
                  flush=True)
    base = None
    for arm in args.arms:
        cpu = [d["cpu"] for d in results[arm]]
        if not cpu:
            continue
        median = statistics.median(cpu)
        base = base or median
        print(f"{arm}: median {median:.2f} ms/call (runs {', '.join(f'{c:.2f}' for c in cpu)}), "
              f"system {statistics.median(d['sys'] for d in results[arm]):.2f}, ratio to the first {median / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
