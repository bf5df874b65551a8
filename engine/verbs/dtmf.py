"""`<DTMF>` (spec §4.14): send digits on the call (RFC 4733 events, or in-band tones).

The body uses the digit syntax of media.dtmf.parse_digits (0-9 * # A-D keys, `w` = 0.5 s and `W` = 1 s pauses,
`@<ms>` tone length), so what parses here is exactly what the media layer can send. `async` (default true) lets the
next element start without waiting for the digits to finish.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from media.dtmf import parse_digits

from .base import NEXT, Attr, Outcome, Verb


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

    async def run(self, call: Any) -> Outcome:
        """RFC 4733 events (in-band tones when the peer has no telephone-event); async="true" goes on at once."""
        if call.media is None:
            call.log.warning("dtmf_without_media")
            return NEXT
        sending = asyncio.ensure_future(call.media.send_dtmf(self.text))
        call.timeline.add("dtmf_send", digits=self.text)
        if not self.attrs["async"]:
            await sending
        return NEXT
