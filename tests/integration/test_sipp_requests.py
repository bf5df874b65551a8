"""Out-of-dialog requests from SIPp to a running UserAgent: OPTIONS and the RFC 3261 §8.2 refusals."""

from __future__ import annotations

import pytest
from sipharness import HOST, parse_trace

pytestmark = pytest.mark.integration


def _refuse_invites(leg) -> None:  # never reached: these tests send no INVITE
    raise AssertionError("unexpected INVITE")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_options_gets_200(make_ua, make_sipp, transport: str) -> None:
    ua = await make_ua(transports=("udp", "tcp"), on_invite=_refuse_invites)
    sipp = await make_sipp("uac_options.xml", remote=f"{HOST}:{ua.port(transport)}", transport=transport)
    result = await sipp.wait(10)
    assert result.returncode == 0, result.describe()
    reply = next(m for m in parse_trace(result.messages) if m.direction == "received")
    assert reply.status == 200
    allow = {a.strip() for a in (reply.header("Allow") or "").split(",")}
    assert {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"} <= allow
    assert ua.stats["rx_request_OPTIONS"] == 1 and ua.stats["tx_response_200"] == 1


@pytest.mark.parametrize(
    ("method", "max_forwards", "to_tag", "status"),
    [
        ("FOOBAR", 70, "", 501),  # unknown method
        ("SUBSCRIBE", 70, "", 405),  # known, not supported here
        ("OPTIONS", 0, "", 483),  # Max-Forwards exhausted
        ("BYE", 70, ";tag=no-such-dialog", 481),  # in-dialog request for a dialog we do not have
    ],
    ids=["unknown-501", "subscribe-405", "max-forwards-0-483", "bye-unknown-dialog-481"],
)
async def test_refused_requests(make_ua, make_sipp, method: str, max_forwards: int, to_tag: str,
                                status: int) -> None:
    ua = await make_ua(on_invite=_refuse_invites)
    remote = f"{HOST}:{ua.port('udp')}"
    sipp = await make_sipp(
        "uac_request_expect.xml", remote=remote,
        subs={"METHOD": method, "MAX_FORWARDS": max_forwards, "TO": f"<sip:service@{remote}>{to_tag}",
              "STATUS": status},
    )
    result = await sipp.wait(10)
    assert result.returncode == 0, result.describe()  # SIPp got exactly `status`
    replies = [m for m in parse_trace(result.messages) if m.direction == "received"]
    assert [m.status for m in replies] == [status]
    reply = replies[0]
    assert reply.header("CSeq") == f"1 {method}"
    if status == 405:
        assert "SUBSCRIBE" not in (reply.header("Allow") or "") and "INVITE" in (reply.header("Allow") or "")
    to_value = reply.header("To") or ""
    if to_tag:
        assert to_value.endswith(to_tag)  # the request's To tag is kept, no second tag added
    else:
        assert ";tag=" in to_value  # a final response outside a dialog gets a To tag
    assert ua.stats[f"tx_response_{status}"] == 1
    # invented methods are counted together, so a peer cannot grow the counters (and /metrics labels) at will
    assert ua.stats["rx_request_OTHER"] == (1 if method == "FOOBAR" else 0) and "rx_request_FOOBAR" not in ua.stats
    assert not ua.legs
