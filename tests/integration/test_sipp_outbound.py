"""Outbound legs (`UserAgent.invite`) against SIPp acting as a carrier trunk / callee."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from sipharness import (
    HOST,
    collect_events,
    header_param,
    make_sdp,
    parse_trace,
    via_branch,
)

from sip.auth import Credentials
from sip.leg import Answered, EarlyMedia, Ended, Ringing
from sip.transaction import TimerConfig

pytestmark = pytest.mark.integration

VERIFY_DIGEST = Path(__file__).with_name("verify_digest_log.py")
TRUNK_USER, TRUNK_PASS = "trunkuser", "trunkpass"
CUSTOM = ("X-PH-Test", "keep-me")


async def _call(ua, sipp, sdp: str, *, password: str = TRUNK_PASS, user: str = "+15551234567",
                uri_params: str = "", **kw):
    return await ua.invite(
        f"sip:{user}@{sipp.uri_host}{uri_params}", from_uri=f"sip:+15550001111@{HOST}", sdp=sdp, headers=[CUSTOM],
        credentials=Credentials(TRUNK_USER, password), **kw,
    )


def _check_auth_retry(messages: str, sdp: str, auth_header: str, password: str = TRUNK_PASS) -> None:
    """The retried INVITE is a new transaction of the same call, carrying the same headers and body."""
    invites = [m for m in parse_trace(messages) if m.direction == "received" and m.method == "INVITE"]
    assert len(invites) == 2, [m.first_line for m in parse_trace(messages)]
    first, retry = invites
    b1, b2 = via_branch(first.header("Via") or ""), via_branch(retry.header("Via") or "")
    assert b1.startswith("z9hG4bK") and b2.startswith("z9hG4bK")
    assert b1 != b2
    n1, m1 = (first.header("CSeq") or "").split()
    n2, m2 = (retry.header("CSeq") or "").split()
    assert (m1, m2) == ("INVITE", "INVITE") and int(n2) == int(n1) + 1
    assert first.header("Call-ID") == retry.header("Call-ID")
    tag1, tag2 = header_param(first.header("From") or "", "tag"), header_param(retry.header("From") or "", "tag")
    assert tag1 and tag1 == tag2
    assert header_param(retry.header("To") or "", "tag") == ""  # still out of dialog
    for inv in invites:
        assert inv.header(CUSTOM[0]) == CUSTOM[1]
    assert first.header(auth_header) is None
    creds = retry.header(auth_header)
    assert creds is not None and f'username="{TRUNK_USER}"' in creds and 'realm="trunk.test"' in creds
    assert first.body.replace("\r\n", "\n").strip() == sdp.replace("\r\n", "\n").strip()
    assert retry.body == first.body
    assert password not in messages


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_outbound_401_trunk_answers_then_hangs_up(make_ua, make_sipp, media_sink, transport: str) -> None:
    sipp = await make_sipp("uas_trunk_auth_401.xml", transport=transport, extra=["-d", "500"])
    ua = await make_ua(transports=("udp", "tcp"))
    sdp = make_sdp(media_sink)
    leg = await _call(ua, sipp, sdp, uri_params=";transport=tcp" if transport == "tcp" else "")
    events = await collect_events(leg, timeout=15)
    result = await sipp.wait(10)
    assert result.returncode == 0, result.describe()
    answered = [e for e in events if isinstance(e, Answered)]
    assert len(answered) == 1 and answered[0].sdp and "PCMA/8000" in answered[0].sdp
    assert events[-1] == Ended(leg.end_cause) and leg.end_cause is not None
    assert (leg.end_cause.kind, leg.end_cause.by) == ("bye", "remote")
    _check_auth_retry(result.messages, sdp, "Authorization")
    # the ACK for the 401 went to SIPp, and the BYE's 200 came from us
    trace = parse_trace(result.messages)
    assert [m.method for m in trace if m.direction == "received" and m.method] == ["INVITE", "ACK", "INVITE",
                                                                                 "ACK"]
    assert any(m.direction == "received" and m.status == 200 and "BYE" in (m.header("CSeq") or "") for m in trace)
    vias = [m.header("Via") or "" for m in trace if m.method == "INVITE"]
    assert vias and all(v.startswith(f"SIP/2.0/{transport.upper()} ") for v in vias)


async def test_outbound_407_trunk_digest_verifies_offline(make_ua, make_sipp, media_sink) -> None:
    sipp = await make_sipp("uas_trunk_auth_407.xml", extra=["-d", "300"])
    ua = await make_ua()
    sdp = make_sdp(media_sink)
    leg = await _call(ua, sipp, sdp)
    events = await collect_events(leg, timeout=15)
    result = await sipp.wait(10)
    assert result.returncode == 0, result.describe()
    assert any(isinstance(e, Answered) for e in events)
    assert leg.end_cause is not None and (leg.end_cause.kind, leg.end_cause.by) == ("bye", "remote")
    _check_auth_retry(result.messages, sdp, "Proxy-Authorization")
    check = subprocess.run([sys.executable, str(VERIFY_DIGEST), str(sipp.message_file), TRUNK_USER, TRUNK_PASS],
                           capture_output=True, text=True, timeout=20)
    assert check.returncode == 0, check.stdout + check.stderr
    # the authenticated INVITE, and the ACK for its 2xx carrying the same credentials (RFC 3261 §13.2.2.4)
    assert "verified=2 failed=0" in check.stdout
    bad = subprocess.run([sys.executable, str(VERIFY_DIGEST), str(sipp.message_file), TRUNK_USER, "not-it"],
                         capture_output=True, text=True, timeout=20)
    assert bad.returncode == 1  # the offline check can fail


async def test_outbound_wrong_password_is_auth_failed(make_ua, make_sipp, media_sink) -> None:
    sipp = await make_sipp("uas_trunk_auth_401.xml")
    ua = await make_ua()
    leg = await _call(ua, sipp, make_sdp(media_sink), password="wrong-password")
    events = await collect_events(leg, timeout=15)
    result = await sipp.wait(10)
    assert not any(isinstance(e, Answered) for e in events)
    assert leg.end_cause is not None
    assert (leg.end_cause.kind, leg.end_cause.status) == ("auth_failed", 403)
    # the trunk counts the call as failed (bad digest)
    assert (result.returncode, result.timed_out) == (1, False), result.describe()
    trace = parse_trace(result.messages)
    assert [m.status for m in trace if m.direction == "sent" and m.status] == [401, 403]
    # the 403 was ACKed (SIPp took it) and there was no third INVITE
    assert [m.method for m in trace if m.direction == "received" and m.method] == ["INVITE", "ACK", "INVITE",
                                                                                 "ACK"]
    assert "wrong-password" not in result.messages


async def test_outbound_early_media_then_we_hang_up(make_ua, make_sipp, media_sink) -> None:
    sipp = await make_sipp("uas_trunk_auth_401_183_wait_bye.xml")
    ua = await make_ua()
    leg = await _call(ua, sipp, make_sdp(media_sink))
    events = await collect_events(leg, timeout=15, until=Answered)
    kinds = [type(e) for e in events]
    assert kinds == [Ringing, EarlyMedia, Answered], events
    ringing, early = events[0], events[1]
    assert isinstance(ringing, Ringing) and ringing.status == 183 and ringing.sdp and "m=audio" in ringing.sdp
    assert isinstance(early, EarlyMedia) and "PCMA/8000" in early.sdp
    await leg.hangup()
    assert leg.end_cause is not None and (leg.end_cause.kind, leg.end_cause.by) == ("bye", "local")
    result = await sipp.wait(10)
    assert result.returncode == 0, result.describe()
    trace = parse_trace(result.messages)
    bye = [m for m in trace if m.direction == "received" and m.method == "BYE"]
    assert len(bye) == 1
    ok = [m for m in trace if m.direction == "sent" and m.status == 200]
    invite_ok = ok[0]
    # the BYE is in the dialog the 200 created: same Call-ID, our From tag, the trunk's To tag
    assert bye[0].header("Call-ID") == invite_ok.header("Call-ID")
    assert header_param(bye[0].header("From") or "", "tag") == header_param(invite_ok.header("From") or "", "tag")
    assert header_param(bye[0].header("To") or "", "tag") == header_param(invite_ok.header("To") or "", "tag")
    assert bye[0].header("Authorization") is None  # credentials are not replayed on in-dialog requests
    assert "BYE" in (ok[-1].header("CSeq") or "")


async def test_outbound_cancel_while_ringing(make_ua, make_sipp, media_sink) -> None:
    sipp = await make_sipp("uas_noanswer.xml")
    ua = await make_ua()
    leg = await ua.invite(f"sip:+15551234567@{sipp.uri_host}", from_uri=f"sip:+15550001111@{HOST}",
                          sdp=make_sdp(media_sink))
    events = await collect_events(leg, timeout=10, until=Ringing)
    assert isinstance(events[-1], Ringing) and events[-1].status == 180
    await leg.cancel()
    events += await collect_events(leg, timeout=5)
    assert isinstance(events[-1], Ended)
    assert leg.end_cause is not None and (leg.end_cause.kind, leg.end_cause.by) == ("cancelled", "local")
    result = await sipp.wait(10)
    assert result.returncode == 0, result.describe()
    trace = parse_trace(result.messages)
    received = [m for m in trace if m.direction == "received"]
    assert [m.method for m in received] == ["INVITE", "CANCEL", "ACK"]
    invite, cancel, ack = received
    # RFC 3261 §9.1: the CANCEL matches the INVITE's Via branch, Call-ID, From, To (no tag) and CSeq number
    assert via_branch(cancel.header("Via") or "") == via_branch(invite.header("Via") or "")
    assert cancel.header("Call-ID") == invite.header("Call-ID")
    assert (cancel.header("CSeq") or "").split()[0] == (invite.header("CSeq") or "").split()[0]
    assert header_param(cancel.header("To") or "", "tag") == ""
    # the ACK for the 487 is hop-by-hop: same branch as the INVITE, the 487's To tag
    assert via_branch(ack.header("Via") or "") == via_branch(invite.header("Via") or "")
    assert header_param(ack.header("To") or "", "tag") != ""


@pytest.mark.parametrize("status", [486, 503, 404])
async def test_outbound_rejected(make_ua, make_sipp, media_sink, status: int) -> None:
    sipp = await make_sipp(f"uas_reject_{status}.xml")
    ua = await make_ua()
    leg = await ua.invite(f"sip:+15551234567@{sipp.uri_host}", from_uri=f"sip:+15550001111@{HOST}",
                          sdp=make_sdp(media_sink))
    events = await collect_events(leg, timeout=10)
    assert not any(isinstance(e, Answered) for e in events)
    assert leg.end_cause is not None
    assert (leg.end_cause.kind, leg.end_cause.status, leg.end_cause.by) == ("rejected", status, "remote")
    result = await sipp.wait(10)
    assert result.returncode == 0, result.describe()
    assert [m.method for m in parse_trace(result.messages) if m.direction == "received"] == ["INVITE", "ACK"]


async def test_outbound_authenticated_retry_never_answered_is_auth_timeout(make_ua, make_sipp, media_sink) -> None:
    t1 = 0.05  # Timer B = 64*T1 = 3.2 s
    sipp = await make_sipp("uas_auth_then_silent.xml", subs={"SILENCE_MS": 3600})
    ua = await make_ua(timers=TimerConfig(t1=t1))
    loop_time = ua.now()
    leg = await _call(ua, sipp, make_sdp(media_sink))
    events = await collect_events(leg, timeout=10)
    elapsed = ua.now() - loop_time
    assert not any(isinstance(e, Answered) for e in events)
    assert leg.end_cause is not None and leg.end_cause.kind == "auth_timeout", leg.end_cause
    assert 64 * t1 * 0.9 <= elapsed <= 64 * t1 + 1.5, elapsed
    result = await sipp.wait(10)
    assert result.returncode == 0, result.describe()
    invites = [m for m in parse_trace(result.messages) if m.direction == "received" and m.method == "INVITE"]
    first, retries = invites[0], invites[1:]
    assert first.header("Authorization") is None and retries[0].header("Authorization")
    # Timer A retransmitted the authenticated INVITE (same transaction) at 0.05, 0.1, 0.2 ... s until Timer B
    assert len(retries) >= 5
    assert len({via_branch(m.header("Via") or "") for m in retries}) == 1
    assert {m.header("CSeq") for m in retries} == {retries[0].header("CSeq")}


async def test_a_2xx_retransmitted_after_our_bye_is_acked_again_and_nothing_more(make_ua, make_sipp,
                                                                                   media_sink) -> None:
    sipp = await make_sipp("uas_2xx_after_bye.xml")
    ua = await make_ua()
    leg = await ua.invite(f"sip:+15551234567@{sipp.uri_host}", from_uri=f"sip:+15550001111@{HOST}",
                          sdp=make_sdp(media_sink))
    while not isinstance(await asyncio.wait_for(leg.events.get(), 10), Answered):
        pass
    await leg.hangup()
    result = await sipp.wait(15)
    assert result.returncode == 0, result.describe()  # a second BYE would have been unexpected
    sent = [m.method for m in parse_trace(result.messages) if m.direction == "received" and m.method]
    assert sent == ["INVITE", "ACK", "BYE", "ACK"]
