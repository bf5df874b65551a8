"""`<GetDigits>` (spec §4.9): play the nested prompts (Speak, Play, Wait) and collect DTMF keys.

Schema and defaults from the spec table: timeout 5 s for the first key, digitTimeout 2 s between keys, finishOnKey
'#' ("" or none disables it), numDigits 99 (1-99: FW caps at 99, softswitch refuses more with a precise error),
retries 1, redirect true, playBeep false, validDigits '1234567890*#', log true. The docs' unclear `async` attribute
is not accepted. What does not live here: DTMF detection (media/dtmf) and the action request.
"""

from __future__ import annotations

from typing import Any, ClassVar

from media.fetch import AudioFetchError
from media.sources import beep

from .base import NEXT, Attr, Outcome, Redirect, Verb
from .collect import Collected, collect_keys, play_prompts_until_key


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

    async def run(self, call: Any) -> Outcome:
        a = self.attrs
        call.flush_digits()
        collected = Collected()
        attempt = 0
        for attempt in range(a["retries"]):
            first = await play_prompts_until_key(call, self.children)
            if first is None and a["playBeep"]:
                await call.play(beep())
            collected = await collect_keys(
                call, first_key=first, first_timeout=a["timeout"], next_timeout=a["digitTimeout"],
                num_digits=a["numDigits"], finish_keys=a["finishOnKey"], valid_keys=a["validDigits"],
            )
            if collected.invalid:
                call.timeline.add("getdigits_invalid", attempt=attempt + 1)
                if a["invalidDigitsSound"]:
                    await _play_url(call, a["invalidDigitsSound"])
                continue
            if collected.digits:
                break
        digits = collected.digits if not collected.invalid else ""
        call.timeline.add("getdigits", digits=digits if a["log"] else "***", attempts=attempt + 1)
        if not digits or not a["action"]:
            return NEXT  # no input: the next element runs (spec §4.9; FW posts nothing)
        params = {"Digits": digits}
        if a["redirect"]:
            return Redirect(call.resolve(a["action"]), a["method"], params, continue_on_failure=True)
        call.callback(a["action"], a["method"], params, kind="action")
        return NEXT


async def _play_url(call: Any, url: str) -> None:
    try:
        pcm = await call.engine.fetcher.fetch(call.resolve(url))
    except AudioFetchError as exc:
        call.log.error("play_failed", url=exc.url, cause=exc.cause)
        return
    await call.play_pcm(pcm)
