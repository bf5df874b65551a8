"""Calls complete through SIP retransmissions under packet loss, delay and reordering (figures: completed/attempted).

Each condition runs netdriver.py (app + engine + caller, all real, our own SIP stack on both sides) inside its own
network namespace, created and deleted here:
- loss: the namespace's loopback drops 10 % of UDP datagrams at random (iptables `-m statistic --mode random`),
  every datagram both ways: SIP and RTP;
- delay: the seeded relay (relay.py) holds every SIP datagram 200 ms ± 50 ms each way, which reorders them;
- both: 10 % loss and the relay (a relayed datagram crosses the lossy loopback twice: ~19 % loss per SIP message).
`tc netem` cannot be used here (the kernel has no netem qdisc). The three conditions run in parallel.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.common import ROOT, iptables_counts, netns, pick

CONDITIONS = {
    "loss10": {"loss": 0.10, "args": []},
    "delay200_reorder": {"loss": 0.0, "args": ["--delay", "0.2", "--jitter", "0.05"]},
    "loss10_delay200_reorder": {"loss": 0.10, "args": ["--delay", "0.2", "--jitter", "0.05"]},
}


async def run_condition(name: str, tmp_path: Path, calls: int) -> dict[str, Any]:
    spec = CONDITIONS[name]
    out = tmp_path / f"{name}.json"
    with netns(loss=spec["loss"]) as ns:
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns, sys.executable, "-m", "tests.reliability.netdriver",
            "--calls", str(calls), "--rate", "5", "--seed", "7", "--tmp", str(tmp_path / name), "--out", str(out),
            *spec["args"], cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        stdout, _ = await asyncio.wait_for(proc.communicate(), timeout=60 + calls * 2)
        assert proc.returncode == 0, f"{name}: netdriver failed:\n{stdout.decode(errors='replace')[-4000:]}"
        result: dict[str, Any] = json.loads(out.read_text())
        if spec["loss"]:
            seen, dropped = iptables_counts(ns)
            result["udp_datagrams"] = seen
            result["udp_dropped"] = dropped
            result["udp_loss_pct"] = round(100 * dropped / seen, 1) if seen else 0
    return result


@pytest.mark.parametrize("_", [None], ids=["all_conditions"])
async def test_calls_complete_under_loss_delay_and_reordering(_: None, tmp_path: Path,
                                                              figures: dict[str, Any]) -> None:
    calls = pick(20, 300)
    results = await asyncio.gather(*(run_condition(name, tmp_path, calls) for name in CONDITIONS))
    report: dict[str, Any] = {}
    for name, result in zip(CONDITIONS, results, strict=True):
        report[name] = f"{result['completed']}/{result['attempted']}"
        figures[f"{name}_details"] = {k: v for k, v in result.items() if k != "failures"}
        if result["failures"]:
            figures[f"{name}_failures"] = result["failures"]
    figures.update(report)
    for name, result in zip(CONDITIONS, results, strict=True):
        assert result["completed"] == result["attempted"], f"{name}: {result['failures']}"
        assert result["call_rows"] == result["call_rows_ended"] == result["attempted"]
        if CONDITIONS[name]["loss"]:
            assert 5 <= result["udp_loss_pct"] <= 15, result  # the loss really was there
            assert result["engine_retransmissions"] + result["caller_retransmissions"] > 0
        else:
            assert result["relay_reordered"] > 0  # the reordering really was there
