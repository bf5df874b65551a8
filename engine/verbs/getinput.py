"""`<GetInput>` (spec §4.10): play the nested prompts (Speak, Play, Wait) and collect DTMF and/or speech.

Schema from the spec table: `action` and `inputType` (dtmf, speech or "dtmf speech") are required;
executionTimeout 5-60 s (default 15); digitEndTimeout and speechEndTimeout are `auto` (default) or 2-10 s (the value
is the string 'auto' or an int); finishOnKey '#' ("" or none disables it); numDigits >= 1 (no default: not limited);
speechModel default | command_and_search | phone_call; language a BCP-47 tag (default en-US); log and redirect true,
profanityFilter false. Whether speech recognition is available is the engine's business at run time, not a parse
error. What does not live here: DTMF detection, speech recognition and the action request.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from .base import NEXT, Attr, Outcome, Redirect, Verb, show
from .collect import collect_keys, play_prompts_until_key

DEFAULT_DIGIT_END_TIMEOUT = 5  # seconds between keys for digitEndTimeout="auto" (a documented choice)

_BCP47 = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")


def parse_end_timeout(value: str) -> str | int:
    """'auto' or an integer number of seconds in 2..10."""
    if value.lower() == "auto":
        return "auto"
    if not value.isdigit() or not 2 <= int(value) <= 10:
        raise ValueError(f"expected auto or an integer from 2 to 10, got {show(value)}")
    return int(value)


def parse_language_tag(value: str) -> str:
    """A BCP-47 language tag such as en-US."""
    if not _BCP47.fullmatch(value):
        raise ValueError(f"expected a language tag such as en-US, got {show(value)}")
    return value


class GetInput(Verb):
    """Collect keys and/or speech while the nested prompts play; post the result to `action`."""

    TAG = "GetInput"
    ATTRIBUTES: ClassVar[dict[str, Attr]] = {
        "action": Attr("url", required=True),
        "method": Attr("method", default="POST"),
        "inputType": Attr("enum", required=True, choices=("dtmf", "speech", "dtmf speech")),
        "executionTimeout": Attr("int", default=15, min=5, max=60),
        "digitEndTimeout": Attr("custom", default="auto", parse=parse_end_timeout),
        "speechEndTimeout": Attr("custom", default="auto", parse=parse_end_timeout),
        "finishOnKey": Attr("key", default="#"),
        "numDigits": Attr("int", min=1),
        "speechModel": Attr("enum", default="default", choices=("default", "command_and_search", "phone_call")),
        "hints": Attr("str"),
        "language": Attr("custom", default="en-US", parse=parse_language_tag),
        "interimSpeechResultsCallback": Attr("url"),
        "interimSpeechResultsCallbackMethod": Attr("method", default="POST"),
        "log": Attr("bool", default=True),
        "redirect": Attr("bool", default=True),
        "profanityFilter": Attr("bool", default=False),
    }
    CHILDREN = frozenset({"Speak", "Play", "Wait"})
    ANSWERS = True

    async def run(self, call: Any) -> Outcome:
        a = self.attrs
        if a["inputType"] == "speech":
            # No speech engine in softswitch: a clear error, the verb ends, the call goes on.
            call.log.error("getinput_speech_unsupported",
                           error="inputType speech is not supported without a speech engine")
            call.timeline.add("getinput_unsupported", inputType="speech")
            return NEXT
        if a["inputType"] != "dtmf":
            call.log.warning("getinput_speech_ignored", detail="speech input is not supported; collecting DTMF only")
        call.flush_digits()
        first = await play_prompts_until_key(call, self.children)
        end_timeout = DEFAULT_DIGIT_END_TIMEOUT if a["digitEndTimeout"] == "auto" else a["digitEndTimeout"]
        collected = await collect_keys(
            call, first_key=first, first_timeout=a["executionTimeout"], next_timeout=end_timeout,
            num_digits=a["numDigits"], finish_keys=a["finishOnKey"], valid_keys="0123456789*#ABCD",
        )
        call.timeline.add("getinput", digits=collected.digits if a["log"] else "***")
        if not collected.digits:
            return NEXT  # no input: the next element runs (spec §4.10)
        params = {"InputType": "dtmf", "Digits": collected.digits, "Speech": "", "SpeechConfidenceScore": ""}
        if a["redirect"]:
            return Redirect(call.resolve(a["action"]), a["method"], params, continue_on_failure=True)
        call.callback(a["action"], a["method"], params, kind="action")
        return NEXT
