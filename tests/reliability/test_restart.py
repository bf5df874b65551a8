"""kill -9 mid-load, restart on the same SQLite file: no call record and no callback is lost.

Load at the moment of the SIGKILL (the engine is a real `softswitch serve` subprocess):
- short calls that already ended while the app refused their hangup callbacks (HTTP 500): some released to the outbox
  after their three tries, some still being tried (held in the outbox, engine/store.py);
- answered calls in progress (inbound from our own SIP stack, outbound placed through the REST API to a far end);
- calls still being set up (their answer_url hangs).
Then the app goes down and comes back, the engine restarts on the same database, and we check: every call the
engine started has a row and that row has an end (calls cut by the crash: HangupCause CRASH, 5030, engine/recovery.py),
every call's hangup callback reaches the app (signed, verifiable with the plivo SDK), and the outbox is empty.
Reported: started, rows, ended rows, hangup callbacks delivered (and duplicates: delivery is at least once), lost.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import aiohttp
from caller import Caller
from engine_env import FarEnd
from sipharness import free_port, free_port_block

from tests.helpers.daemon import HOST, daemon_env, start_daemon
from tests.helpers.webapp import Recorded, WebApp
from tests.reliability.common import db_rows, pick

TOKEN = "restart-token-5b1e"
AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"


def answer(req: Recorded) -> tuple[int, str]:
    to = req.params.get("To", "")
    if to == "200":  # short: ends by itself after a second
        return 200, '<Response><Speak>Hello.</Speak><Wait length="1"/></Response>'
    return 200, '<Response><Speak>Hello.</Speak><Wait length="300"/></Response>'  # long: up until someone ends it


async def rest_call(base: str, to: str, answer_url: str, hangup_url: str) -> str:
    auth = base64.b64encode(f"{AUTH_ID}:{TOKEN}".encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {auth}"}) as s, s.post(
        f"{base}/v1/Account/{AUTH_ID}/Call/",
        data={"from": "+15550001000", "to": to, "answer_url": answer_url, "hangup_url": hangup_url},
    ) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["request_uuid"])


async def run_cycle(tmp_path: Path, app: WebApp, cycle: int, sizes: dict[str, int]) -> dict[str, Any]:
    sip_port, http_port, rtp = free_port(), free_port(), free_port_block(400)
    rtp += rtp % 2
    env = daemon_env(tmp_path, sip_port, http_port, rtp, 398,
                     SOFTSWITCH_HTTP__AUTH_TOKEN=TOKEN,
                     SOFTSWITCH_INBOUND__ANSWER_URL=app.url("/answer"),
                     SOFTSWITCH_INBOUND__HANGUP_URL=app.url("/hangup"),
                     SOFTSWITCH_INBOUND__NUMBERS__300__ANSWER_URL=app.url("/setup"),
                     SOFTSWITCH_INBOUND__NUMBERS__300__HANGUP_URL=app.url("/hangup"))
    daemon = await start_daemon(tmp_path, env=env, sip_port=sip_port, http_port=http_port, name=f"serve{cycle}a")
    app.fail("/hangup", 500)  # the app refuses hangup callbacks from now on
    app.hang("/setup")  # and never answers the setup URL
    tasks: list[asyncio.Task[Any]] = []
    async with Caller() as caller, FarEnd() as far:
        try:
            def place(to: str) -> None:
                tasks.append(asyncio.ensure_future(caller.call(daemon.uri, to=to, timeout=120)))

            for _ in range(sizes["short_early"]):
                place("200")
            await asyncio.sleep(5.5)  # these ended ~4.5 s ago: their 3 tries failed, they are in the outbox
            for _ in range(sizes["long"]):
                place("100")
            for _ in range(sizes["setup"]):
                place("300")
            for _ in range(sizes["outbound"]):
                await rest_call(daemon.base_url, f"sip:far@{HOST}:{far.port}", app.url("/answer"), app.url("/hangup"))
            deadline = time.monotonic() + 20  # every long call up (a slow machine may need more than a second)
            while time.monotonic() < deadline and (
                sum(1 for o in caller.outcomes if o.to == "100" and o.answered) < sizes["long"]
                or sum(1 for leg in far.legs if leg.state.value == "answered") < sizes["outbound"]
            ):
                await asyncio.sleep(0.1)
            for _ in range(sizes["short_late"]):
                place("200")
            await asyncio.sleep(2.2)  # the late short calls ended ~1 s ago: their hangup callbacks are being tried
            live = sum(1 for o in caller.outcomes if o.answered and o.end is None)
            live += sum(1 for leg in far.legs if leg.state.value == "answered")
            daemon.kill9()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            caller.legs.clear()  # the engine is gone: nothing to hang up
            far.legs.clear()

    started = {r.params["CallUUID"] for r in app.requests if r.path in ("/answer", "/setup")}
    rows_before = {row[0]: row for row in db_rows(daemon.db_path, "SELECT call_uuid, ended_at FROM calls")}
    pending_before = db_rows(daemon.db_path, "SELECT count(*) FROM outbox")[0][0]

    await app.stop()  # the app goes down too...
    app.fail("/hangup", None)
    app.hang("/setup", False)
    app.route("/hangup", "")
    app.requests.clear()
    await app.start()  # ...comes back, and the engine restarts on the same database
    restarted = await start_daemon(tmp_path, env=env, sip_port=sip_port, http_port=http_port, name=f"serve{cycle}b")
    try:
        rows = {row[0] for row in db_rows(restarted.db_path, "SELECT call_uuid FROM calls")}
        deadline = time.monotonic() + 60
        while True:
            got = {r.params["CallUUID"] for r in app.requests_to("/hangup")}
            if rows <= got or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        hangups = app.requests_to("/hangup")
        assert all(r.signature_valid(TOKEN) for r in hangups)
        by_uuid: dict[str, list[Recorded]] = {}
        for r in hangups:
            by_uuid.setdefault(r.params["CallUUID"], []).append(r)
        ended = db_rows(restarted.db_path, "SELECT call_uuid, hangup_cause, hangup_code, answered_at, ended_at "
                                           "FROM calls")
        left = db_rows(restarted.db_path, "SELECT count(*) FROM outbox WHERE gave_up_at IS NULL")[0][0]
        # the engine takes calls again after the restart
        async with Caller() as after:
            again = await after.call(restarted.uri, to="200", timeout=20)
        assert again.answered and again.ended_by_bye, again.describe()
    finally:
        restarted.stop()
    crashed = [e for e in ended if e[1] == "CRASH"]
    return {
        "started": len(started | set(rows_before)),
        "live_at_kill": live,
        "rows": len(rows),
        "rows_without_end_after_restart": sum(1 for e in ended if e[4] is None),
        "crash_recorded": len(crashed),
        "crash_answered": sum(1 for e in crashed if e[3] is not None),
        "outbox_rows_at_kill": pending_before,
        "hangup_callbacks_delivered": len(by_uuid),
        "duplicates": sum(len(v) - 1 for v in by_uuid.values()),
        "missing_rows": sorted(started - rows),
        "lost": sorted(rows - set(by_uuid)),
        "outbox_left": left,
        "by_uuid": {u: v[-1].params for u, v in by_uuid.items()},
        "ended": ended,
    }


async def test_kill9_mid_load_then_restart_loses_no_call_record_and_no_callback(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    sizes = pick(
        {"short_early": 6, "long": 8, "setup": 3, "outbound": 2, "short_late": 6},
        {"short_early": 30, "long": 40, "setup": 10, "outbound": 10, "short_late": 30},
    )
    cycles = pick(1, 3)
    totals = {"cycles": 0, "started": 0, "live_at_kill": 0, "rows": 0, "crash_recorded": 0,
              "outbox_rows_at_kill": 0, "hangup_callbacks_delivered": 0, "duplicates": 0, "lost": 0,
              "missing_rows": 0}
    async with WebApp() as app:
        app.route("/answer", answer)
        app.route("/setup", answer)
        for cycle in range(cycles):
            work = tmp_path / f"cycle{cycle}"
            work.mkdir()
            result = await run_cycle(work, app, cycle, sizes)
            assert not result["missing_rows"], f"calls without a row: {result['missing_rows']}"
            assert result["rows_without_end_after_restart"] == 0
            assert not result["lost"], f"hangup callbacks never delivered: {result['lost']}"
            assert result["outbox_left"] == 0
            assert result["live_at_kill"] >= sizes["long"]  # the kill really was mid-call
            assert result["crash_recorded"] >= sizes["long"] + sizes["outbound"] + sizes["setup"]
            assert result["outbox_rows_at_kill"] >= sizes["short_early"] + sizes["short_late"]
            for uuid, params in result["by_uuid"].items():
                row = next(e for e in result["ended"] if e[0] == uuid)
                assert params["HangupCause"] == row[1] and params["HangupCauseCode"] == str(row[2]), (uuid, params)
                if row[1] == "CRASH":
                    assert params["HangupCauseName"] == "Engine Crashed"
                    assert params["CallStatus"] == ("completed" if row[3] is not None else "failed")
                else:
                    assert params["CallStatus"] == "completed" and params["HangupCause"] == "NORMAL_CLEARING"
            totals["cycles"] += 1
            for key in ("started", "live_at_kill", "rows", "crash_recorded", "outbox_rows_at_kill",
                        "hangup_callbacks_delivered", "duplicates"):
                totals[key] += result[key]
            totals["lost"] += len(result["lost"])
            totals["missing_rows"] += len(result["missing_rows"])
            app.requests.clear()
    figures.update(totals)
