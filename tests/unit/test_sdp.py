"""SDP parsing of real peers' bodies (SIPp, baresip), offer/answer per RFC 3264, hold."""

from __future__ import annotations

import pytest

from media import sdp
from media.sdp import SdpError, build_answer, build_offer, negotiate_answer, parse

# SIPp's uac_call.xml offer as it goes on the wire (SIPp sends CRLF)
SIPP_OFFER = (
    "v=0\r\n"
    "o=caller 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 16000 RTP/AVP 8 0 101\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
)

# baresip 1.0.0's offer, captured from `baresip -f caller -n 127.0.0.1` on this machine
BARESIP_OFFER = (
    "v=0\r\n"
    "o=- 2761484450 1496715530 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "a=tool:baresip 1.0.0\r\n"
    "m=audio 45606 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=sendrecv\r\n"
    "a=label:1\r\n"
    "a=rtcp-rsize\r\n"
    "a=ssrc:27916186 cname:sip:alice@127.0.0.1:45572\r\n"
    "a=minptime:20\r\n"
    "a=ptime:20\r\n"
)

# a carrier-style offer: G.729 first, dynamic telephone-event 96, bandwidth line, media-level c=, video too
CARRIER_OFFER = (
    "v=0\n"
    "o=Sonus_UAC 1234 5678 IN IP4 203.0.113.5\n"
    "s=SIP Media Capabilities\n"
    "c=IN IP4 203.0.113.5\n"
    "b=AS:80\n"
    "t=0 0\n"
    "m=audio 31000 RTP/AVP 18 0 96\n"
    "c=IN IP4 203.0.113.77\n"
    "a=rtpmap:18 G729/8000\n"
    "a=fmtp:18 annexb=no\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:96 telephone-event/8000\n"
    "a=fmtp:96 0-16\n"
    "a=ptime:30\n"
    "a=maxptime:40\n"
    "a=x-unknown-thing:1\n"
    "m=video 31002 RTP/AVP 99\n"
    "a=rtpmap:99 H264/90000\n"
)


def test_parse_sipp_offer() -> None:
    d = parse(SIPP_OFFER)
    assert (d.origin.username, d.origin.session_id, d.origin.session_version) == ("caller", "53655765", 2353687637)
    assert d.connection == "127.0.0.1"
    m = d.audio()
    assert m is not None
    assert (m.port, m.proto, m.payload_types) == (16000, "RTP/AVP", [8, 0, 101])
    assert str(m.rtpmap[8]) == "PCMA/8000" and m.fmtp[101] == "0-15"
    assert m.telephone_event() == 101 and m.ptime is None
    assert d.direction_for(m) == "sendrecv"


def test_parse_baresip_offer_keeps_unknown_attributes() -> None:
    d = parse(BARESIP_OFFER)
    assert d.attributes == ["tool:baresip 1.0.0"]
    m = d.media[0]
    assert m.direction == "sendrecv" and m.ptime == 20
    assert m.attributes == ["label:1", "rtcp-rsize", "ssrc:27916186 cname:sip:alice@127.0.0.1:45572", "minptime:20"]
    again = parse(d.to_text())
    assert again == d


def test_parse_lf_only_and_media_level_connection() -> None:
    d = parse(CARRIER_OFFER)
    audio = d.media[0]
    assert d.connection_for(audio) == "203.0.113.77"
    assert audio.ptime == 30 and audio.maxptime == 40 and audio.telephone_event() == 96
    assert audio.fmtp[18] == "annexb=no" and "x-unknown-thing:1" in audio.attributes
    assert "b=AS:80" in d.other_lines
    assert d.media[1].media == "video" and d.media[1].port == 31002


def test_parse_static_types_without_rtpmap_and_odd_whitespace() -> None:
    text = "v=0\r\no=- 1 1 IN IP4 10.0.0.1 \r\n s=x\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8\r\n"
    m = parse(text).audio()
    assert m is not None and m.codec(0) == sdp.RtpMap("PCMU", 8000) and m.codec(8) == sdp.RtpMap("PCMA", 8000)


@pytest.mark.parametrize(("text", "message"), [
    ("", "no v= line"),
    ("hello world", "no v= line"),
    ("v=0\r\ns=-\r\n", "no o= line"),
    ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio\r\n", "bad m= line"),
    ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n", "bad m= port"),
    ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN\r\n", "bad c= line"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        parse(text)


def test_answer_sipp_prefers_offer_order() -> None:
    text, n = build_answer(SIPP_OFFER, "192.0.2.10", 20000, session_id="77", session_version=3)
    assert (n.codec, n.payload_type, n.dtmf_payload_type) == ("PCMA", 8, 101)
    assert (n.remote_address, n.remote_port, n.direction, n.ptime) == ("127.0.0.1", 16000, "sendrecv", 20)
    assert n.sending and n.receiving and not n.on_hold
    lines = text.split("\r\n")
    assert lines[:5] == ["v=0", "o=softswitch 77 3 IN IP4 192.0.2.10", "s=softswitch", "c=IN IP4 192.0.2.10",
                         "t=0 0"]
    assert "m=audio 20000 RTP/AVP 8 101" in lines
    assert "a=fmtp:101 0-15" in lines and "a=sendrecv" in lines and "a=ptime:20" in lines
    assert text.endswith("\r\n")


def test_answer_respects_our_supported_list() -> None:
    _, n = build_answer(SIPP_OFFER, "192.0.2.10", 20000, supported=("PCMU",))
    assert (n.codec, n.payload_type) == ("PCMU", 0)


def test_answer_carrier_offer_rejects_video_and_skips_g729() -> None:
    text, n = build_answer(CARRIER_OFFER, "192.0.2.10", 20000)
    assert (n.codec, n.payload_type, n.dtmf_payload_type, n.ptime) == ("PCMU", 0, 96, 30)
    assert (n.remote_address, n.remote_port) == ("203.0.113.77", 31000)
    answer = parse(text)
    assert [(m.media, m.port) for m in answer.media] == [("audio", 20000), ("video", 0)]  # same m= count
    assert answer.media[0].formats == ["0", "96"] and answer.media[0].fmtp[96] == "0-16"


def test_answer_without_telephone_event() -> None:
    offer = SIPP_OFFER.replace(" 8 0 101", " 0").replace("a=rtpmap:101 telephone-event/8000\r\n", "")
    text, n = build_answer(offer, "192.0.2.10", 20000)
    assert n.dtmf_payload_type is None and "telephone-event" not in text
    _, n2 = build_answer(SIPP_OFFER, "192.0.2.10", 20000, dtmf=False)
    assert n2.dtmf_payload_type is None


def test_answer_dynamic_pcmu_payload_type() -> None:
    offer = SIPP_OFFER.replace(" 8 0 101", " 97 101").replace("a=rtpmap:8 PCMA/8000", "a=rtpmap:97 pcmu/8000")
    _, n = build_answer(offer, "192.0.2.10", 20000)
    assert (n.codec, n.payload_type) == ("PCMU", 97)


def test_answer_second_audio_stream_when_first_has_no_common_codec() -> None:
    offer = ("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
             "m=audio 4000 RTP/AVP 18\r\nm=audio 4002 RTP/AVP 8\r\n")
    text, n = build_answer(offer, "10.0.0.2", 5000)
    assert n.remote_port == 4002 and n.codec == "PCMA"
    assert [m.port for m in parse(text).media] == [0, 5000]


@pytest.mark.parametrize(("offer", "message"), [
    (SIPP_OFFER.replace(" 8 0 101", " 18").replace("a=rtpmap:8 PCMA/8000", "a=rtpmap:18 G729/8000"),
     r"no usable audio in the offer: no common codec: offered G729/8000, .*we support PCMU/PCMA"),
    ("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=video 4000 RTP/AVP 99\r\n",
     "video not supported"),
    ("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n", "the offer has no audio stream"),
    (SIPP_OFFER.replace("RTP/AVP", "RTP/SAVP"), "transport RTP/SAVP not supported"),
    ("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", "no c= line"),
])
def test_answer_errors(offer: str, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        build_answer(offer, "10.0.0.2", 5000)


@pytest.mark.parametrize(("offered", "ours", "answered"), [
    ("sendrecv", "sendrecv", "sendrecv"),
    ("sendonly", "recvonly", "recvonly"),
    ("recvonly", "sendonly", "sendonly"),
    ("inactive", "inactive", "inactive"),
])
def test_answer_mirrors_direction(offered: str, ours: str, answered: str) -> None:
    text, n = build_answer(SIPP_OFFER + f"a={offered}\r\n", "10.0.0.2", 5000)
    assert n.direction == ours and f"a={answered}" in text
    assert n.sending == (ours in ("sendrecv", "sendonly"))


def test_answer_session_level_direction_and_rfc2543_hold() -> None:
    session_level = SIPP_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n")
    _, n = build_answer(session_level, "10.0.0.2", 5000)
    assert n.direction == "recvonly" and n.on_hold
    zero = SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")
    text, n = build_answer(zero, "10.0.0.2", 5000)
    assert n.on_hold and not n.sending and n.direction == "recvonly" and "a=recvonly" in text


def test_answer_our_own_wish_is_intersected() -> None:
    _, n = build_answer(SIPP_OFFER, "10.0.0.2", 5000, direction="sendonly")  # we hold the peer in our answer
    assert n.direction == "sendonly"
    _, n = build_answer(SIPP_OFFER + "a=sendonly\r\n", "10.0.0.2", 5000, direction="sendonly")
    assert n.direction == "inactive"


def test_offer_and_negotiate_with_sipp_style_answer() -> None:
    offer = build_offer("192.0.2.10", 20000, session_id="42")
    d = parse(offer)
    assert d.origin.session_id == "42" and d.connection == "192.0.2.10"
    assert d.media[0].formats == ["0", "8", "101"] and d.media[0].direction == "sendrecv"
    sipp_answer = SIPP_OFFER.replace("o=caller", "o=trunk") + "a=sendrecv\r\n"
    n = negotiate_answer(offer, sipp_answer)
    assert (n.codec, n.payload_type, n.dtmf_payload_type) == ("PCMA", 8, 101)  # the answerer's first choice
    assert (n.remote_address, n.remote_port, n.direction) == ("127.0.0.1", 16000, "sendrecv")


def test_negotiate_answer_cases() -> None:
    offer = build_offer("192.0.2.10", 20000, codecs=("PCMU",), dtmf_pt=None)
    n = negotiate_answer(offer, BARESIP_OFFER)
    assert (n.codec, n.dtmf_payload_type) == ("PCMU", None)  # we did not offer telephone-event
    held = build_offer("192.0.2.10", 20000, direction="sendonly")
    n = negotiate_answer(held, BARESIP_OFFER.replace("a=sendrecv", "a=recvonly"))
    assert n.direction == "sendonly" and n.sending
    n = negotiate_answer(build_offer("192.0.2.10", 20000), BARESIP_OFFER.replace("a=sendrecv", "a=inactive"))
    assert n.direction == "inactive" and not n.sending and not n.receiving
    with pytest.raises(SdpError, match="accepted no codec we offered"):
        negotiate_answer(offer, BARESIP_OFFER.replace(" 0 8 101", " 8"))
    with pytest.raises(SdpError, match="every audio port is 0"):
        negotiate_answer(offer, BARESIP_OFFER.replace("m=audio 45606", "m=audio 0"))
    with pytest.raises(SdpError, match="media lines"):
        negotiate_answer(offer, CARRIER_OFFER)


def test_build_offer_validates() -> None:
    with pytest.raises(ValueError):
        build_offer("1.2.3.4", 20000, codecs=("G729",))
    with pytest.raises(ValueError):
        build_offer("1.2.3.4", 20000, dtmf_pt=13)
    with pytest.raises(ValueError):
        build_offer("1.2.3.4", 20000, direction="sideways")
    ipv6 = parse(build_offer("2001:db8::1", 20000))
    assert ipv6.connection_addrtype == "IP6" and ipv6.origin.addrtype == "IP6"


def test_with_direction_for_hold_reoffer() -> None:
    offer = build_offer("192.0.2.10", 20000, session_id="9", session_version=4)
    hold = sdp.with_direction(offer, "sendonly")
    d = parse(hold)
    assert d.media[0].direction == "sendonly" and d.origin.session_version == 5
    assert "a=sendrecv" not in hold


def test_parsed_sdp_cache_matches_parse_and_is_never_changed() -> None:
    from media import sdp as sdp_module

    for kwargs in ({}, {"codecs": ("PCMA",), "dtmf_pt": None, "direction": "sendonly"}, {"ptime": 30}):
        for address in ("192.0.2.1", "2001:db8::1"):
            text = sdp_module.build_offer(address, 4000, **kwargs)  # type: ignore[arg-type]
            assert sdp_module._PARSED[text] == sdp_module.parse(text)  # what answering it will use
    offer = sdp_module.build_offer("192.0.2.1", 4000, session_id="42")
    cached = sdp_module._as_sdp(offer)
    assert sdp_module._as_sdp(offer) is cached and sdp_module.parse(offer) is not cached
    snapshot = sdp_module.parse(offer)
    held = sdp_module.with_direction(offer, "sendonly")
    sdp_module.build_answer(offer, "192.0.2.9", 5000)
    sdp_module.negotiate_answer(offer, sdp_module.build_answer(offer, "192.0.2.9", 5000)[0])
    assert "a=sendonly" in held and cached == snapshot  # the shared object was not modified
    for n in range(sdp_module._PARSED_MAX + 10):  # bounded
        sdp_module._as_sdp(sdp_module.build_offer("192.0.2.1", 4000 + 2 * n))
    assert len(sdp_module._PARSED) <= sdp_module._PARSED_MAX


def test_check_offer_refuses_what_build_answer_refuses_with_the_same_reason() -> None:
    good = sdp.build_offer("192.0.2.1", 4000)
    sdp.check_offer(good)  # answerable: no error
    video_only = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n"
    g722 = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 9\r\n"
    for offer in (video_only, g722):
        with pytest.raises(sdp.SdpError) as built:
            sdp.build_answer(offer, "192.0.2.2", 6000)
        with pytest.raises(sdp.SdpError) as checked:
            sdp.check_offer(offer)
        assert str(checked.value) == str(built.value)
