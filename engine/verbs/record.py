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

from typing import ClassVar

from .base import Attr, Verb


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
