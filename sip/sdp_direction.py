"""Answering hold/unhold re-offers (RFC 3264 §8.4, RFC 6337): mirror the offer's direction into our SDP.

Only the direction attribute and the origin version are touched; full SDP negotiation lives in media/.
"""

from __future__ import annotations

_MIRROR = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive", "sendrecv": "sendrecv"}


def offer_direction(sdp: str) -> str:
    """The effective direction of the (first) audio stream: a=... attribute, or c=0.0.0.0 meaning hold (RFC 2543)."""
    direction = "sendrecv"
    zero_address = False
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith("a=") and line[2:] in _MIRROR:
            direction = line[2:]
        elif line.startswith("c=") and line.endswith(" 0.0.0.0"):
            zero_address = True
    if zero_address and direction == "sendrecv":
        return "sendonly"
    return direction


def answer_direction(local_sdp: str, offer: str) -> tuple[str, bool]:
    """Our SDP with its direction set to answer `offer`, and whether the peer put us on hold."""
    offered = offer_direction(offer)
    answer_dir = _MIRROR[offered]
    if not local_sdp:
        return "", offered in ("sendonly", "inactive")
    lines = [ln for ln in local_sdp.replace("\r\n", "\n").split("\n") if ln]
    out: list[str] = []
    placed = False
    for line in lines:
        if line.startswith("a=") and line[2:] in _MIRROR:
            if not placed:
                out.append(f"a={answer_dir}")
                placed = True
            continue
        if line.startswith("o="):
            parts = line.split(" ")
            if len(parts) >= 3 and parts[2].isdigit():
                parts[2] = str(int(parts[2]) + 1)  # a changed session description bumps the version (RFC 3264 §8)
                line = " ".join(parts)
        out.append(line)
    if not placed:
        out.append(f"a={answer_dir}")
    return "\r\n".join(out) + "\r\n", offered in ("sendonly", "inactive")
