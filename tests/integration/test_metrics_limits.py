"""/metrics and /health of a real engine, and admission limits against real INVITEs on loopback.

/metrics must parse as Prometheus text and its series must move with a call; above [limits] max_calls or max_cps a
new INVITE gets 503 with Retry-After while the call already admitted goes on undisturbed.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from engine_env import AUTH_TOKEN, EngineEnv, Phone
from rawsip import Metrics, invite_burst, parse_prometheus

from engine.metrics import CONTENT_TYPE

pytestmark = pytest.mark.integration

AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"  # engine/defaults.toml's http.auth_id


async def scrape(env: EngineEnv) -> Metrics:
    assert env.engine is not None
    async with aiohttp.ClientSession() as session, session.get(f"{env.engine.base_url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE
        return parse_prometheus(await response.text())


async def health(env: EngineEnv) -> tuple[int, dict[str, object]]:
    assert env.engine is not None
    async with aiohttp.ClientSession() as session, session.get(f"{env.engine.base_url}/health") as response:
        return response.status, await response.json()


async def scrape_until(env: EngineEnv, check: Callable[[Metrics], bool], timeout: float = 5.0) -> Metrics:
    deadline = time.monotonic() + timeout
    while True:
        m = await scrape(env)
        if check(m) or time.monotonic() > deadline:
            return m
        await asyncio.sleep(0.05)


async def test_metrics_parse_and_move_with_a_call(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", '<Speak>Counting.</Speak><Wait length="1"/>')
        before = await scrape(env)
        assert before.types["softswitch_calls_total"] == "counter"
        assert before.types["softswitch_webhook_latency_seconds"] == "histogram"
        assert before.value("softswitch_active_calls") == 0
        assert before.value("softswitch_calls_total", direction="inbound", outcome="completed") == 0
        assert before.value("softswitch_callback_outbox_depth") == 0
        assert before.value("softswitch_draining") == 0
        assert before.value("softswitch_admission_limit", limit="max_calls") == 2000
        status, body = await health(env)
        assert status == 200 and body == {"status": "ok", "calls": 0, "draining": False, "outbox_depth": 0}

        await phone.dial(env.uri)
        await asyncio.wait_for(phone.answered.wait(), 15)
        during = await scrape(env)
        assert during.value("softswitch_active_calls") == 1
        assert (await health(env))[1]["calls"] == 1

        await asyncio.wait_for(phone.ended.wait(), 15)
        await env.hangup_callback()
        after = await scrape_until(env, lambda m: m.value("softswitch_webhook_latency_seconds_count") >= 2)
        assert after.value("softswitch_active_calls") == 0
        assert after.value("softswitch_calls_total", direction="inbound", outcome="completed") == 1
        assert after.total("softswitch_calls_total") == 1
        assert after.value("softswitch_admission_admitted_total") == 1
        sip = "softswitch_sip_messages_total"
        assert after.value(sip, direction="rx", kind="request", method="INVITE", status="") == 1
        assert after.value(sip, direction="rx", kind="request", method="ACK", status="") >= 1
        assert after.value(sip, direction="tx", kind="response", method="", status="100") == 1
        assert after.value(sip, direction="tx", kind="response", method="", status="200") >= 1
        assert after.value(sip, direction="tx", kind="request", method="BYE", status="") == 1  # end of XML: we BYE
        assert after.value(sip, direction="rx", kind="response", method="", status="200") >= 1  # ... and get 200
        assert after.value("softswitch_sip_retransmissions_total") >= 0
        assert after.value("softswitch_sip_malformed_total", action="dropped") == 0
        # answer_url + hangup callback: two requests, both timed, none failed.
        assert after.value("softswitch_webhook_requests_total") == 2
        assert after.value("softswitch_webhook_failures_total") == 0
        assert after.value("softswitch_webhook_latency_seconds_count") == 2
        assert after.value("softswitch_webhook_latency_seconds_sum") > 0
        assert after.value("softswitch_webhook_latency_seconds_bucket", le="+Inf") == 2
        assert after.value("softswitch_webhook_callbacks_total", result="delivered") == 1


async def test_max_calls_rejects_a_second_call_with_503_and_the_first_goes_on(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path, SOFTSWITCH_LIMITS__MAX_CALLS="1") as env, Phone() as phone:
        assert env.engine is not None
        env.xml("/answer", '<Speak>The first call is not disturbed.</Speak><Wait length="2"/>')
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.answered.wait(), 15)

        [second] = await invite_burst(env.sip_port, 1)
        assert [r.status for r in second.replies] == [503]
        assert second.replies[0].headers["retry-after"] == "5"
        # The REST API asks the same admission: 429 with Retry-After.
        basic = {"Authorization": "Basic " + base64.b64encode(f"{AUTH_ID}:{AUTH_TOKEN}".encode()).decode()}
        async with aiohttp.ClientSession(headers=basic) as session:
            form = {"from": "15550001111", "to": "15550002222", "answer_url": env.app.url("/answer")}
            async with session.post(f"{env.engine.base_url}/v1/Account/{AUTH_ID}/Call/", data=form) as response:
                assert response.status == 429 and response.headers["Retry-After"] == "5"
            # Several destinations are admitted all or nothing; more than the limits allow at once is a 400.
            form["to"] = "15550002222<15550003333"
            async with session.post(f"{env.engine.base_url}/v1/Account/{AUTH_ID}/Call/", data=form) as response:
                assert response.status == 400 and "max_calls 1" in (await response.json())["error"]

        await asyncio.wait_for(phone.ended.wait(), 15)
        assert phone.end_cause.kind == "bye" and phone.end_cause.by == "remote"  # the engine's BYE at end of XML
        assert phone.heard.loud_frames() > 25
        hangup = await env.hangup_callback()
        assert hangup["HangupCause"] == "NORMAL_CLEARING" and hangup["CallStatus"] == "completed"
        assert len(env.app.requests_to("/answer")) == 1  # the refused INVITE never reached the app

        m = await scrape(env)
        assert m.value("softswitch_admission_rejected_total", reason="max_calls") == 2  # the INVITE and the POST
        assert m.value("softswitch_sip_messages_total", direction="tx", kind="response", method="",
                       status="503") == 1

        # The slot is free again: the next call is admitted (and its XML rejects it).
        env.xml("/answer", '<Hangup reason="busy"/>')
        [third] = await invite_burst(env.sip_port, 1)
        assert third.final is not None and third.final.status == 486


async def test_max_cps_refuses_part_of_a_burst(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path, SOFTSWITCH_LIMITS__MAX_CPS="2") as env:
        env.xml("/answer", '<Hangup reason="busy"/>')
        exchanges = await invite_burst(env.sip_port, 5)
        finals = sorted(e.final.status for e in exchanges if e.final is not None)
        assert finals == [486, 486, 503, 503, 503]
        for e in exchanges:
            if e.final is not None and e.final.status == 503:
                assert e.replies == [e.final]  # refused before any 100 Trying
                assert e.final.headers["retry-after"] == "1"
        assert len(env.app.requests_to("/answer")) == 2
        m = await scrape(env)
        assert m.value("softswitch_admission_rejected_total", reason="max_cps") == 3
        assert m.value("softswitch_admission_admitted_total") == 2
        m = await scrape_until(env, lambda m: m.total("softswitch_calls_total") == 2)
        assert m.value("softswitch_calls_total", direction="inbound", outcome="busy") == 2


async def test_overload_refuses_new_calls_while_the_loop_runs_late_then_admits_again(tmp_path: Path) -> None:
    """A CPU-starved engine (its loop blocked 150 ms at a time, as when more calls come than it can set up) refuses
    new INVITEs with 503 + Retry-After: 1, whatever max_cps allows; once it keeps up again, calls are admitted."""
    async with EngineEnv(tmp_path, SOFTSWITCH_LIMITS__MAX_LOOP_LAG_MS="40") as env:
        env.xml("/answer", '<Hangup reason="busy"/>')
        [first] = await invite_burst(env.sip_port, 1)
        assert first.final is not None and first.final.status == 486  # admitted: the app's XML answered it
        loop = asyncio.get_running_loop()
        hogging = [True]

        def hog() -> None:
            if hogging[0]:
                time.sleep(0.15)
                loop.call_later(0.005, hog)

        hog()
        try:
            await asyncio.sleep(0.6)
            refused = await invite_burst(env.sip_port, 2)
        finally:
            hogging[0] = False
        for exchange in refused:
            assert exchange.final is not None and exchange.final.status == 503
            assert exchange.final.headers["retry-after"] == "1"
        m = await scrape(env)
        assert m.value("softswitch_admission_rejected_total", reason="overload") == 2
        assert m.value("softswitch_admission_limit", limit="max_loop_lag_seconds") == 0.04
        assert m.value("softswitch_event_loop_lag_seconds") > 0
        recovered = await scrape_until(env, lambda m: m.value("softswitch_overloaded") == 0, timeout=10)
        assert recovered.value("softswitch_event_loop_lag_seconds") < 0.02
        [after] = await invite_burst(env.sip_port, 1)
        assert after.final is not None and after.final.status == 486
        assert len(env.app.requests_to("/answer")) == 2  # the refused INVITEs never reached the app
