"""`<DTMF>` (spec §4.14): send digits on the call (RFC 4733 events, or in-band tones).

The body uses the digit syntax of media.dtmf.parse_digits (0-9 * # A-D keys, `w` = 0.5 s and `W` = 1 s pauses,
`@<ms>` tone length), so what parses here is exactly what the media layer can send. `async` (default true) lets the
next element start without waiting for the digits to finish.
"""

from __future__ import annotations

from typing import ClassVar

from media.dtmf import parse_digits

from .base import Attr, Verb


def check_digit_string(text: str) -> str:
    """`text` if it is a non-empty DTMF string media.dtmf can send; ValueError otherwise."""
    try:
        steps = parse_digits(text)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if not any(step.digit for step in steps):
        raise ValueError(f"no keys to send in {text!r}")
    return text


class DTMF(Verb):
    """Send the body's digits."""

    TAG = "DTMF"
    ATTRIBUTES: ClassVar[dict[str, Attr]] = {
        "async": Attr("bool", default=True),
    }
    TEXT = "required"
    ANSWERS = True

    def validate(self) -> None:
        try:
            check_digit_string(self.text)
        except ValueError as exc:
            raise self.error(f"body: {exc}") from None
