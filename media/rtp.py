"""RTP packets (RFC 3550 §5.1): parse what arrives on the wire, serialise what we send.

`RtpPacket.parse(data)` validates strictly enough to drop garbage (version != 2, shorter than its header, CSRC list or
extension, padding count of zero or larger than the payload) and raises `RtpError`; `to_bytes()` is its inverse.
`pack_header()` is the sender's fast path (one struct call, no object). Sequence and timestamp arithmetic helpers
(`seq_newer`, `seq_distance`) live here too. This module must not do I/O, pacing, codec work or RTCP.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
HEADER_SIZE = 12
_HEADER = struct.Struct("!BBHII")
_pack = _HEADER.pack
_unpack_from = _HEADER.unpack_from


class RtpError(ValueError):
    """Bytes that are not a valid RTP packet."""


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """The header extension (RFC 3550 §5.3.1): a 16-bit profile value and whole 32-bit words of data."""

    profile: int
    data: bytes


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0  # number of padding octets at the end (including the count octet); 0 = no padding

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Decode one datagram; raises RtpError for anything that is not RTP version 2."""
        size = len(data)
        if size < HEADER_SIZE:
            raise RtpError(f"too short for an RTP header: {size} bytes")
        b0, b1, seq, ts, ssrc = _unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError(f"RTP version {b0 >> 6}, expected 2")
        pt = b1 & 0x7F
        if b0 == 0x80:  # the common case: no padding, extension or CSRCs
            return cls(pt, seq, ts, ssrc, bytes(data[HEADER_SIZE:]), bool(b1 & 0x80))
        offset = HEADER_SIZE
        cc = b0 & 0x0F
        csrcs: tuple[int, ...] = ()
        if cc:
            end = offset + 4 * cc
            if end > size:
                raise RtpError(f"CSRC count {cc} runs past the end of a {size}-byte packet")
            csrcs = struct.unpack_from(f"!{cc}I", data, offset)
            offset = end
        extension = None
        if b0 & 0x10:
            if offset + 4 > size:
                raise RtpError("header extension announced but missing")
            profile, words = struct.unpack_from("!HH", data, offset)
            end = offset + 4 + 4 * words
            if end > size:
                raise RtpError(f"header extension of {words} words runs past the end of a {size}-byte packet")
            extension = RtpExtension(profile, bytes(data[offset + 4:end]))
            offset = end
        padding = 0
        end = size
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0 or padding > size - offset:
                raise RtpError(f"bad padding count {padding} for a {size - offset}-byte payload")
            end = size - padding
        return cls(pt, seq, ts, ssrc, bytes(data[offset:end]), bool(b1 & 0x80), csrcs, extension, padding)

    def to_bytes(self) -> bytes:
        if len(self.csrcs) > 15:
            raise RtpError(f"at most 15 CSRCs, got {len(self.csrcs)}")
        b0 = 0x80 | len(self.csrcs)
        if self.extension is not None:
            b0 |= 0x10
        if self.padding:
            b0 |= 0x20
        parts = [_pack(b0, (0x80 if self.marker else 0) | (self.payload_type & 0x7F), self.sequence & 0xFFFF,
                       self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF)]
        if self.csrcs:
            parts.append(struct.pack(f"!{len(self.csrcs)}I", *self.csrcs))
        if self.extension is not None:
            data = self.extension.data
            if len(data) % 4:
                raise RtpError(f"header extension data must be whole 32-bit words, got {len(data)} bytes")
            parts.append(struct.pack("!HH", self.extension.profile, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if self.padding:
            if not 1 <= self.padding <= 255:
                raise RtpError(f"padding must be 1-255 octets, got {self.padding}")
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def pack_header(payload_type: int, sequence: int, timestamp: int, ssrc: int, marker: bool = False) -> bytes:
    """The 12-byte fixed header (no CSRC, extension or padding): the sender's per-packet fast path."""
    return _pack(0x80, (0x80 | payload_type) if marker else payload_type, sequence & 0xFFFF,
                 timestamp & 0xFFFFFFFF, ssrc)


def seq_distance(new: int, old: int) -> int:
    """Signed distance from sequence number `old` to `new` on the 16-bit circle (-32768..32767)."""
    d = (new - old) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def seq_newer(new: int, old: int) -> bool:
    """Whether `new` comes after `old` (RFC 3550 A.1 modular comparison)."""
    return seq_distance(new, old) > 0


def ts_distance(new: int, old: int) -> int:
    """Signed distance between two 32-bit RTP timestamps."""
    d = (new - old) & 0xFFFFFFFF
    return d - 0x100000000 if d >= 0x80000000 else d
