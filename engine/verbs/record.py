"""`<Record>` (spec §4.11): record the caller (blocking), or the whole call in the background (`recordSession`,
`startOnDialAnswer`).

Schema from the spec table: fileFormat mp3|wav (mp3), timeout 15 s of silence (>= 1), maxLength 60 s (> 1, so >= 2),
playBeep true, finishOnKey '#' (one or more of 0-9 * #; "" or none disables it), recordSession and
startOnDialAnswer false (not both: each names a different background mode), recordChannelType mono|stereo
(stereo), redirect true, callbackUrl/callbackMethod. The transcription attributes (transcriptionType auto|hybrid,
transcriptionUrl, transcriptionMethod, transcriptionReportType) are accepted so existing apps parse, but softswitch
does not transcribe: no transcription request is ever made.
What does not live here: the recorder (media/recorder) and the action/callback requests.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from media.detect import SilenceDetector
from media.sources import beep

from .base import NEXT, Attr, Outcome, Redirect, Verb


class Record(Verb):
    """Record audio to a file and post where it is."""

    TAG = "Record"
    ATTRIBUTES: ClassVar[dict[str, Attr]] = {
        "action": Attr("url"),
        "method": Attr("method", default="POST"),
        "fileFormat": Attr("enum", default="mp3", choices=("mp3", "wav")),
        "redirect": Attr("bool", default=True),
        "timeout": Attr("int", default=15, min=1),
        "maxLength": Attr("int", default=60, min=2),
        "playBeep": Attr("bool", default=True),
        "finishOnKey": Attr("digits", default="#"),
        "recordSession": Attr("bool", default=False),
        "startOnDialAnswer": Attr("bool", default=False),
        "recordChannelType": Attr("enum", default="stereo", choices=("mono", "stereo")),
        "transcriptionType": Attr("enum", choices=("auto", "hybrid")),  # accepted, not performed
        "transcriptionUrl": Attr("url"),
        "transcriptionMethod": Attr("method", default="POST"),
        "transcriptionReportType": Attr("str"),
        "callbackUrl": Attr("url"),
        "callbackMethod": Attr("method", default="POST"),
    }
    ANSWERS = True

    def validate(self) -> None:
        if self.attrs["recordSession"] and self.attrs["startOnDialAnswer"]:
            raise self.error('cannot be "true" together with recordSession="true"', "startOnDialAnswer")

    async def run(self, call: Any) -> Outcome:
        a = self.attrs
        if a["recordSession"] or a["startOnDialAnswer"]:
            # Non-blocking: the whole call (or the next Dial once B answers) is recorded in the background.
            call.start_session_recording(self, on_dial_answer=a["startOnDialAnswer"])
            return NEXT
        if call.media is None:
            call.log.error("record_without_media")
            return NEXT
        if a["playBeep"]:
            await call.play(beep())
        call.flush_digits()
        recording = call.new_recording(a["fileFormat"], channels=1)
        silence = SilenceDetector(min_silence_s=float(a["timeout"]))
        call.media.add_sink(recording.recorder)
        call.media.add_sink(silence)
        loop = asyncio.get_running_loop()
        started = loop.time()
        finish_key = ""
        try:
            while loop.time() - started < a["maxLength"]:
                if silence.silence_reached:
                    break
                try:
                    key = await asyncio.wait_for(call.digits.get(), 0.05)
                except TimeoutError:
                    continue
                if key in a["finishOnKey"]:
                    finish_key = key
                    break
        except asyncio.CancelledError:
            # The caller hung up while recording (the usual end of a voicemail): the file and its action
            # callback are still delivered.
            params = recording.finish(digits="hangup")
            self._deliver(call, params, redirect=False)
            raise
        finally:
            call.media.remove_sink(silence)
            call.media.remove_sink(recording.recorder)
        params = recording.finish(digits=finish_key)
        return self._deliver(call, params, redirect=a["redirect"])

    def _deliver(self, call: Any, params: dict[str, str], *, redirect: bool) -> Outcome:
        a = self.attrs
        if a["callbackUrl"]:
            call.callback(a["callbackUrl"], a["callbackMethod"], params, kind="recording")
        if not a["action"]:
            return NEXT
        if redirect:
            return Redirect(call.resolve(a["action"]), a["method"], params, continue_on_failure=True)
        call.callback(a["action"], a["method"], params, kind="action")
        return NEXT
