"""One network-fault run: the app, the engine (in process) and a caller, in whatever network namespace this runs in.

    python -m tests.reliability.netdriver --calls 20 --rate 5 [--delay 0.2 --jitter 0.05 --relay-loss 0 --seed 1]
        --tmp DIR --out result.json

test_netfaults.py runs it with `ip netns exec NS` inside a namespace whose loopback drops 10 % of UDP datagrams
(iptables), with or without the delay/reordering relay (relay.py; --delay 0 runs without it). A call is completed
when the caller got the 200, the engine ended it with a BYE after its document (Speak + Wait 2 s), and the app got its
hangup callback with CallStatus=completed and HangupCause=NORMAL_CLEARING; every other call is listed with what
each side saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE.parents[1]))

from engine_env import EngineEnv  # noqa: E402

from tests.reliability.caller import Caller  # noqa: E402
from tests.reliability.relay import CALLER_REAL, RELAY_FOR_CALLER, RELAY_FOR_ENGINE, Relay  # noqa: E402

DOCUMENT = '<Response><Speak>Hello.</Speak><Wait length="2"/></Response>'


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    relay_on = args.delay > 0 or args.jitter > 0 or args.relay_loss > 0
    overrides = {"SOFTSWITCH_SIP__PUBLIC_ADDRESS": RELAY_FOR_ENGINE} if relay_on else {}
    async with EngineEnv(tmp, **overrides) as env:
        assert env.engine is not None
        env.xml("/answer", DOCUMENT)
        caller_kwargs = {"bind_host": CALLER_REAL, "public_address": RELAY_FOR_CALLER} if relay_on else {}
        relay: Relay | None = None
        async with Caller(**caller_kwargs) as caller:
            target = env.uri
            if relay_on:
                relay = await Relay(env.sip_port, caller.port, delay=args.delay, jitter=args.jitter,
                                    loss=args.relay_loss, seed=args.seed).start()
                target = f"sip:100@{RELAY_FOR_ENGINE}:{env.sip_port}"
            started = time.monotonic()
            tasks = []
            for n in range(args.calls):
                tasks.append(asyncio.ensure_future(
                    caller.call(target, to="100", timeout=args.call_timeout, headers=[("X-PH-Seq", str(n))])))
                await asyncio.sleep(1 / args.rate)
            outcomes = await asyncio.gather(*tasks)
            # the last hangup callbacks
            deadline = time.monotonic() + 15
            while len(env.app.requests_to("/hangup")) < sum(1 for o in outcomes if o.answered) and \
                    time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - started
            if relay is not None:
                relay.close()
            hangups = {r.params.get("X-PH-Seq"): r.params for r in env.app.requests_to("/hangup")}
            completed, failures = 0, []
            for o in outcomes:
                h = hangups.get(str(o.n), {})
                ok = (o.answered and o.ended_by_bye and o.end is not None and o.end.by == "remote"
                      and h.get("CallStatus") == "completed" and h.get("HangupCause") == "NORMAL_CLEARING")
                if ok:
                    completed += 1
                else:
                    failures.append(f"{o.describe()}; app hangup callback: "
                                    f"{h.get('HangupCause', 'none')}/{h.get('CallStatus', '-')}")
            engine_ua = env.engine.ua
            result = {
                "attempted": len(outcomes),
                "completed": completed,
                "failures": failures,
                "answer_p50_s": pct([o.answered_after for o in outcomes if o.answered_after is not None], 0.5),
                "answer_p95_s": pct([o.answered_after for o in outcomes if o.answered_after is not None], 0.95),
                "answer_max_s": pct([o.answered_after for o in outcomes if o.answered_after is not None], 1.0),
                "engine_retransmissions": engine_ua.layer.retransmissions,
                "caller_retransmissions": caller.ua.layer.retransmissions,
                "elapsed_s": round(elapsed, 1),
            }
            if relay is not None:
                result.update({
                    "relay_forwarded": relay.stats.forwarded,
                    "relay_dropped": relay.stats.dropped,
                    "relay_reordered": relay.stats.reordered,
                    "relay_mean_delay_ms": round(statistics.mean(relay.stats.delays) * 1000, 1)
                    if relay.stats.delays else 0,
                })
            await asyncio.sleep(0.5)
            rows = await env.engine.store.list_calls(limit=100000)  # type: ignore[union-attr]
            result["call_rows"] = len(rows)
            result["call_rows_ended"] = sum(1 for r in rows if r.ended_at is not None)
            caller.legs.clear()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--relay-loss", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--call-timeout", type=float, default=60.0)
    parser.add_argument("--tmp", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
