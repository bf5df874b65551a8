"""G.711: known codes, silence, round-trip error bounds, backend agreement (audioop / numpy tables / pure Python)."""

from __future__ import annotations

import math
import struct

import pytest

from media import g711

ALL_SAMPLES = struct.pack("<65536h", *range(-32768, 32768))


@pytest.fixture(params=g711.available_backends())
def backend(request: pytest.FixtureRequest):
    previous = g711.BACKEND
    g711.use_backend(request.param)
    yield request.param
    g711.use_backend(previous)


def _pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def test_silence_bytes() -> None:
    assert g711.SILENCE_BYTE == {"PCMU": 0xFF, "PCMA": 0xD5}
    assert g711.SILENCE["PCMU"] == b"\xff" * 160 and g711.SILENCE["PCMA"] == b"\xd5" * 160
    assert g711.silence("PCMA", 240) == b"\xd5" * 240
    for codec in g711.CODECS:
        assert g711.encode(bytes(320), codec) == g711.SILENCE[codec]
    assert g711.decode(g711.SILENCE["PCMU"], "PCMU") == bytes(320)
    assert g711.decode(g711.SILENCE["PCMA"], "PCMA") == _pcm(8) * 160  # A-law has no zero code: +8 is its quietest


def test_known_codes(backend: str) -> None:
    # µ-law: 0 -> 0xFF, full scale positive -> 0x80, full scale negative -> 0x00; A-law: 0 -> 0xD5, +max -> 0xAA
    assert g711.encode(_pcm(0, 32767, -32768), "PCMU") == bytes([0xFF, 0x80, 0x00])
    assert g711.encode(_pcm(0, 32767, -32768), "PCMA") == bytes([0xD5, 0xAA, 0x2A])
    assert g711.decode(bytes([0x80, 0x00, 0xFF, 0x7F]), "PCMU") == _pcm(32124, -32124, 0, 0)
    assert g711.decode(bytes([0xAA, 0x2A, 0xD5, 0x55]), "PCMA") == _pcm(32256, -32256, 8, -8)


def test_backends_are_bit_exact() -> None:
    reference = {c: (g711.encode(ALL_SAMPLES, c), g711.decode(bytes(range(256)), c)) for c in g711.CODECS}
    previous = g711.BACKEND
    try:
        for name in g711.available_backends():
            g711.use_backend(name)
            for codec in g711.CODECS:
                assert g711.encode(ALL_SAMPLES, codec) == reference[codec][0], (name, codec)
                assert g711.decode(bytes(range(256)), codec) == reference[codec][1], (name, codec)
    finally:
        g711.use_backend(previous)


def test_reference_algorithm_matches_audioop() -> None:
    if "audioop" not in g711.available_backends():
        pytest.skip("audioop is not available on this Python")
    samples = range(-32768, 32768)
    assert bytes(g711.linear_to_ulaw(s) for s in samples) == g711._encode_audioop(ALL_SAMPLES, "PCMU")
    assert bytes(g711.linear_to_alaw(s) for s in samples) == g711._encode_audioop(ALL_SAMPLES, "PCMA")
    for codec, fn in (("PCMU", g711.ulaw_to_linear), ("PCMA", g711.alaw_to_linear)):
        assert _pcm(*(fn(c) for c in range(256))) == g711._decode_audioop(bytes(range(256)), codec)


@pytest.mark.parametrize(("codec", "max_error"), [("PCMU", 644), ("PCMA", 512)])
def test_round_trip_error_bounds(backend: str, codec: str, max_error: int) -> None:
    out = struct.unpack("<65536h", g711.decode(g711.encode(ALL_SAMPLES, codec), codec))
    errors = [abs(a - b) for a, b in zip(range(-32768, 32768), out, strict=True)]
    assert max(errors) <= max_error
    # the error is relative: small signals are reproduced closely (logarithmic companding)
    small = [abs(a - b) for a, b in zip(range(-32768, 32768), out, strict=True) if abs(a) < 256]
    assert max(small) <= 16


def test_codes_survive_decode_encode(backend: str) -> None:
    for codec in g711.CODECS:
        again = g711.encode(g711.decode(bytes(range(256)), codec), codec)
        differing = [c for c in range(256) if again[c] != c]
        # only µ-law's "negative zero" 0x7F comes back as +0 (0xFF)
        assert differing == ([0x7F] if codec == "PCMU" else [])


def test_tone_snr(backend: str) -> None:
    tone = [int(16000 * math.sin(2 * math.pi * 1000 * n / 8000 + 0.3)) for n in range(800)]
    pcm = _pcm(*tone)
    for codec in g711.CODECS:
        out = struct.unpack("<800h", g711.decode(g711.encode(pcm, codec), codec))
        signal = sum(x * x for x in tone)
        noise = sum((a - b) ** 2 for a, b in zip(tone, out, strict=True))
        assert 10 * math.log10(signal / noise) > 30  # G.711 gives ~38 dB SNR on a loud tone


def test_any_payload_length_and_odd_pcm_rejected(backend: str) -> None:
    assert len(g711.decode(b"\xd5" * 240, "PCMA")) == 480  # SIPp's 30 ms payloads
    assert g711.encode(b"", "PCMU") == b""
    with pytest.raises(ValueError):
        g711.encode(b"\x00\x00\x00", "PCMU")
    with pytest.raises(ValueError):
        g711.encode(bytes(320), "G729")


def test_transcode() -> None:
    pcm = _pcm(*[int(9000 * math.sin(n / 5)) for n in range(160)])
    ulaw = g711.encode(pcm, "PCMU")
    alaw = g711.transcode(ulaw, "PCMU", "PCMA")
    assert alaw == g711.encode(g711.decode(ulaw, "PCMU"), "PCMA")
    assert g711.transcode(g711.SILENCE["PCMU"], "PCMU", "PCMA") == g711.SILENCE["PCMA"]
    assert g711.transcode(alaw, "PCMA", "PCMA") == alaw


def test_backend_switch_validates() -> None:
    with pytest.raises(ValueError):
        g711.use_backend("nonsense")


def test_encoder_and_decoder_are_shared_per_codec() -> None:
    """One function per codec for every RTP session (not two more objects per call leg for the collector)."""
    assert g711.encoder("PCMU") is g711.encoder("PCMU")
    assert g711.decoder("PCMA") is g711.decoder("PCMA")
    assert g711.encoder("PCMU") is not g711.encoder("PCMA")
    pcm = b"\x00\x10" * 160
    assert g711.decoder("PCMU")(g711.encoder("PCMU")(pcm)) == g711.decode(g711.encoder("PCMU")(pcm), "PCMU")
