"""`<Wait>` (spec §4.6): pause for `length` seconds, optionally ending early on silence or on a voicemail beep.

As the first element on an inbound call it delays the answer, so it does not answer (ANSWERS = False, spec §1.4).
What does not live here: silence and beep detection (media/detect).
"""

from __future__ import annotations

from typing import ClassVar

from .base import Attr, Verb


class Wait(Verb):
    """Pause; `silence` stops at `minSilence` ms of silence, `beep` stops at a voicemail beep."""

    TAG = "Wait"
    ATTRIBUTES: ClassVar[dict[str, Attr]] = {
        "length": Attr("int", default=1, min=1),  # seconds
        "silence": Attr("bool", default=False),
        "minSilence": Attr("int", default=2000, min=1),  # milliseconds; used only with silence="true"
        "beep": Attr("bool", default=False),
    }
    ANSWERS = False

    def validate(self) -> None:
        if self.attrs["beep"] and self.attrs["silence"]:
            # spec §4.6: beep detection applies only when silence is false; both at once is ambiguous
            raise self.error('beep="true" cannot be combined with silence="true"', "beep")
