"""`<Wait>` (spec §4.6): pause for `length` seconds, optionally ending early on silence or on a voicemail beep.

As the first element on an inbound call it delays the answer, so it does not answer (ANSWERS = False, spec §1.4).
What does not live here: silence and beep detection (media/detect).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from media.detect import BeepDetector, SilenceDetector

from .base import NEXT, Attr, Outcome, Verb


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

    async def run(self, call: Any) -> Outcome:
        length = float(self.attrs["length"])
        if call.media is None or not (self.attrs["silence"] or self.attrs["beep"]):
            await asyncio.sleep(length)
            return NEXT
        detector: SilenceDetector | BeepDetector
        if self.attrs["silence"]:
            detector = SilenceDetector(min_silence_s=self.attrs["minSilence"] / 1000)
        else:
            detector = BeepDetector()
        call.media.add_sink(detector)
        try:
            deadline = asyncio.get_running_loop().time() + length
            while asyncio.get_running_loop().time() < deadline:
                if isinstance(detector, SilenceDetector) and detector.silence_reached:
                    call.timeline.add("wait_silence")
                    break
                if isinstance(detector, BeepDetector) and detector.beep_ended:
                    # Voicemail drop: the message starts once the beep is over.
                    call.timeline.add("wait_beep", frequency=round(detector.beep_frequency or 0))
                    break
                await asyncio.sleep(0.02)
        finally:
            call.media.remove_sink(detector)
        return NEXT
