"""`<GetDigits>` (spec §4.9): play the nested prompts (Speak, Play, Wait) and collect DTMF keys.

Schema and defaults from the spec table: timeout 5 s for the first key, digitTimeout 2 s between keys, finishOnKey
'#' ("" or none disables it), numDigits 99 (1-99: FW caps at 99, softswitch refuses more with a precise error),
retries 1, redirect true, playBeep false, validDigits '1234567890*#', log true. The docs' unclear `async` attribute
is not accepted. What does not live here: DTMF detection (media/dtmf) and the action request.
"""

from __future__ import annotations

from typing import ClassVar

from .base import Attr, Verb


class GetDigits(Verb):
    """Collect keys while the nested prompts play; post them to `action`."""

    TAG = "GetDigits"
    ATTRIBUTES: ClassVar[dict[str, Attr]] = {
        "action": Attr("url"),
        "method": Attr("method", default="POST"),
        "timeout": Attr("int", default=5, min=1),
        "digitTimeout": Attr("int", default=2, min=1),
        "finishOnKey": Attr("key", default="#"),
        "numDigits": Attr("int", default=99, min=1, max=99),
        "retries": Attr("int", default=1, min=1),
        "redirect": Attr("bool", default=True),
        "playBeep": Attr("bool", default=False),
        "validDigits": Attr("digits", default="1234567890*#"),
        "invalidDigitsSound": Attr("url"),
        "log": Attr("bool", default=True),
    }
    CHILDREN = frozenset({"Speak", "Play", "Wait"})
    ANSWERS = True

    def validate(self) -> None:
        if not self.attrs["validDigits"]:
            raise self.error("must list at least one key (0-9, * or #)", "validDigits")
