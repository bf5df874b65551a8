"""G.711 (PCMU µ-law / PCMA A-law) at the RTP edge: 8 kHz s16le PCM <-> one byte per sample.

This is the only place that knows the G.711 bit layouts. It converts whole buffers (a 20 ms frame of 320 PCM bytes
is 160 G.711 bytes, but any length works: SIPp's g711a.pcap carries 30 ms payloads). It must not do I/O, keep state
between calls, resample, or know about RTP headers.

Backends, fastest first (`BACKEND` says which one is active):
* "audioop": the stdlib C module on Python <= 3.12 (about 0.3 µs per 20 ms frame; its DeprecationWarning is
  silenced at import);
* "numpy": lookup tables (65536-entry encode, 256-entry decode) built from a pure-Python copy of audioop's own
  algorithm, so they are bit-exact with audioop (about 1.1 µs per frame) - used on Python >= 3.13;
* "python": the same tables indexed from Python, for a host without numpy (slow, about 5 µs per frame).

audioop's µ-law encoder differs from ITU-T G.191 for 508 of 65536 negative inputs (it floors `x >> 2` where G.191
takes the one's complement), by at most one code step; every decoder agrees with G.191. We keep audioop's rounding
so the three backends agree with each other byte for byte.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from functools import cache, partial
from typing import Any, Literal

Codec = Literal["PCMU", "PCMA"]
CODECS: tuple[Codec, ...] = ("PCMU", "PCMA")

PAYLOAD_TYPES: dict[str, int] = {"PCMU": 0, "PCMA": 8}  # RFC 3551 static payload types
CODEC_BY_PAYLOAD_TYPE: dict[int, Codec] = {0: "PCMU", 8: "PCMA"}

SILENCE_BYTE: dict[str, int] = {"PCMU": 0xFF, "PCMA": 0xD5}  # the codes that decode to 0 (µ-law 0xFF, A-law 0xD5)
SILENCE: dict[str, bytes] = {codec: bytes([b]) * 160 for codec, b in SILENCE_BYTE.items()}  # one 20 ms payload

_BIG_ENDIAN = sys.byteorder == "big"


def silence(codec: str, samples: int = 160) -> bytes:
    """`samples` G.711 bytes of silence (160 = one 20 ms payload)."""
    return bytes([SILENCE_BYTE[_check(codec)]]) * samples


# -- the reference algorithm (a copy of CPython's audioop.c, 16-bit path) ------------------------------------------
_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _segment(value: int, table: tuple[int, ...]) -> int:
    for i, end in enumerate(table):
        if value <= end:
            return i
    return len(table)


def linear_to_ulaw(sample: int) -> int:
    """One signed 16-bit sample -> µ-law code, exactly as audioop.lin2ulaw (st_14linear2ulaw(sample >> 2))."""
    pcm = sample >> 2
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, 8159) + (0x84 >> 2)
    seg = _segment(pcm, _SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0xF)) ^ mask


def linear_to_alaw(sample: int) -> int:
    """One signed 16-bit sample -> A-law code, exactly as audioop.lin2alaw (st_linear2alaw(sample >> 3))."""
    pcm = sample >> 3
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = _segment(pcm, _SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    code = seg << 4
    code |= (pcm >> 1) & 0xF if seg < 2 else (pcm >> seg) & 0xF
    return code ^ mask


def ulaw_to_linear(code: int) -> int:
    """µ-law code -> signed 16-bit sample (ITU-T G.711; identical to audioop.ulaw2lin)."""
    u = ~code & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - t if u & 0x80 else t - 0x84


def alaw_to_linear(code: int) -> int:
    """A-law code -> signed 16-bit sample (ITU-T G.711; identical to audioop.alaw2lin)."""
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


# -- backends -----------------------------------------------------------------------------------------------------
_audioop: Any = None
_np: Any = None
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop as _audioop  # stdlib until 3.12; removed in 3.13
except ImportError:  # pragma: no cover - Python >= 3.13
    _audioop = None
try:
    import numpy as _np
except ImportError:  # pragma: no cover - numpy is optional
    _np = None


class _Tables:
    """Lookup tables built from the reference algorithm (only built when audioop is missing, or on request)."""

    def __init__(self) -> None:
        signed = [i - 65536 if i >= 32768 else i for i in range(65536)]  # index = the uint16 view of the sample
        self.enc = {"PCMU": bytes(linear_to_ulaw(s) for s in signed), "PCMA": bytes(linear_to_alaw(s) for s in signed)}
        self.dec = {"PCMU": [ulaw_to_linear(c) for c in range(256)], "PCMA": [alaw_to_linear(c) for c in range(256)]}
        self.np_enc: dict[str, Any] = {}
        self.np_dec: dict[str, Any] = {}
        self.py_dec: dict[str, list[bytes]] = {}
        if _np is not None:
            for codec in CODECS:
                self.np_enc[codec] = _np.frombuffer(self.enc[codec], dtype=_np.uint8)
                self.np_dec[codec] = _np.array(self.dec[codec], dtype="<i2")
        for codec in CODECS:
            self.py_dec[codec] = [v.to_bytes(2, "little", signed=True) for v in self.dec[codec]]


_tables: _Tables | None = None


def _get_tables() -> _Tables:
    global _tables
    if _tables is None:
        _tables = _Tables()
    return _tables


def _check(codec: str) -> str:
    if codec not in SILENCE_BYTE:
        raise ValueError(f"unknown G.711 codec {codec!r} (expected 'PCMU' or 'PCMA')")
    return codec


def _encode_audioop(pcm: bytes, codec: str) -> bytes:
    if len(pcm) & 1:
        raise ValueError(f"PCM length must be even (16-bit samples), got {len(pcm)} bytes")
    if _BIG_ENDIAN:  # pragma: no cover
        pcm = _audioop.byteswap(pcm, 2)
    if codec == "PCMU":
        return bytes(_audioop.lin2ulaw(pcm, 2))
    if codec == "PCMA":
        return bytes(_audioop.lin2alaw(pcm, 2))
    raise ValueError(f"unknown G.711 codec {codec!r} (expected 'PCMU' or 'PCMA')")


def _decode_audioop(payload: bytes, codec: str) -> bytes:
    if codec == "PCMU":
        out = _audioop.ulaw2lin(payload, 2)
    elif codec == "PCMA":
        out = _audioop.alaw2lin(payload, 2)
    else:
        raise ValueError(f"unknown G.711 codec {codec!r} (expected 'PCMU' or 'PCMA')")
    return bytes(_audioop.byteswap(out, 2)) if _BIG_ENDIAN else bytes(out)  # pragma: no branch


def _encode_numpy(pcm: bytes, codec: str) -> bytes:
    if len(pcm) & 1:
        raise ValueError(f"PCM length must be even (16-bit samples), got {len(pcm)} bytes")
    table = _get_tables().np_enc[_check(codec)]
    return bytes(table[_np.frombuffer(pcm, dtype="<u2")].tobytes())


def _decode_numpy(payload: bytes, codec: str) -> bytes:
    table = _get_tables().np_dec[_check(codec)]
    return bytes(table[_np.frombuffer(payload, dtype=_np.uint8)].tobytes())


def _encode_python(pcm: bytes, codec: str) -> bytes:
    if len(pcm) & 1:
        raise ValueError(f"PCM length must be even (16-bit samples), got {len(pcm)} bytes")
    table = _get_tables().enc[_check(codec)]
    view = memoryview(pcm).cast("H") if not _BIG_ENDIAN else [int.from_bytes(pcm[i:i + 2], "little")
                                                               for i in range(0, len(pcm), 2)]
    return bytes(table[v] for v in view)


def _decode_python(payload: bytes, codec: str) -> bytes:
    table = _get_tables().py_dec[_check(codec)]
    return b"".join(table[c] for c in payload)


_BACKENDS = {
    "audioop": (_encode_audioop, _decode_audioop),
    "numpy": (_encode_numpy, _decode_numpy),
    "python": (_encode_python, _decode_python),
}


def available_backends() -> list[str]:
    """The backends usable on this interpreter, fastest first."""
    names = []
    if _audioop is not None:
        names.append("audioop")
    if _np is not None:
        names.append("numpy")
    names.append("python")
    return names


BACKEND: str = available_backends()[0]
_encode, _decode = _BACKENDS[BACKEND]


def use_backend(name: str) -> None:
    """Switch backend (tests cross-check them; production keeps the default)."""
    global BACKEND, _encode, _decode
    if name not in available_backends():
        raise ValueError(f"G.711 backend {name!r} is not available here (have {available_backends()})")
    BACKEND = name
    _encode, _decode = _BACKENDS[name]


def encode(pcm: bytes, codec: Codec | str) -> bytes:
    """8 kHz mono s16le PCM -> G.711 bytes (one per sample)."""
    return _encode(pcm, codec)


# One encoder and one decoder per codec, shared by every RTP session: a function made per session (and its closure
# cell) would be two more objects per call leg in the garbage collector's heap for as long as the call lasts.
@cache
def encoder(codec: Codec | str) -> Callable[[bytes], bytes]:
    """The fastest `pcm -> payload` function for one codec (the RTP sender's per-frame hot path)."""
    _check(codec)
    if BACKEND == "audioop" and not _BIG_ENDIAN:
        convert = _audioop.lin2ulaw if codec == "PCMU" else _audioop.lin2alaw
        return lambda pcm: convert(pcm, 2)
    return partial(_encode, codec=codec)


@cache
def decoder(codec: Codec | str) -> Callable[[bytes], bytes]:
    """The fastest `payload -> pcm` function for one codec."""
    _check(codec)
    if BACKEND == "audioop" and not _BIG_ENDIAN:
        convert = _audioop.ulaw2lin if codec == "PCMU" else _audioop.alaw2lin
        return lambda payload: convert(payload, 2)
    return partial(_decode, codec=codec)


def decode(payload: bytes, codec: Codec | str) -> bytes:
    """G.711 bytes -> 8 kHz mono s16le PCM (two bytes per input byte); any length."""
    return _decode(payload, codec)


_ULAW_TO_ALAW: bytes | None = None
_ALAW_TO_ULAW: bytes | None = None


def transcode(payload: bytes, source: Codec | str, target: Codec | str) -> bytes:
    """G.711 -> G.711 without a PCM round trip (a 256-byte translation table; PCMU<->PCMA)."""
    global _ULAW_TO_ALAW, _ALAW_TO_ULAW
    _check(source)
    _check(target)
    if source == target:
        return bytes(payload)
    if _ULAW_TO_ALAW is None or _ALAW_TO_ULAW is None:
        _ULAW_TO_ALAW = encode(decode(bytes(range(256)), "PCMU"), "PCMA")
        _ALAW_TO_ULAW = encode(decode(bytes(range(256)), "PCMA"), "PCMU")
    return payload.translate(_ULAW_TO_ALAW if source == "PCMU" else _ALAW_TO_ULAW)
