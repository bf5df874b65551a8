"""`<Hangup>` (spec §4.7): end the call now, or schedule its end and go on at once (`schedule`).

It never answers first (ANSWERS = False), so an unanswered caller gets a SIP rejection: `reason="rejected"` or
`reason="busy"`. Other reasons are refused at parse time (FW maps them silently to NORMAL_CLEARING; softswitch prefers
a precise error). Which cause an absent reason means (rejected when Hangup is the first element, else
NORMAL_CLEARING, spec §3) is decided at run time.

The class is `HangupVerb`, not `Hangup`, so that `run()` can return the `base.Hangup` outcome without shadowing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .. import causes
from .base import NEXT, Attr, Hangup, Outcome, Verb


class HangupVerb(Verb):
    """End the call (or schedule its end after `schedule` seconds)."""

    TAG = "Hangup"
    ATTRIBUTES: ClassVar[dict[str, Attr]] = {
        "reason": Attr("enum", choices=("rejected", "busy")),
        "schedule": Attr("int", min=1),  # seconds; execution continues with the next element at once
    }
    ANSWERS = False

    async def run(self, call: Any) -> Outcome:
        first = call.first_document and call.verb_index == 0
        cause = causes.from_hangup_reason(self.attrs["reason"], first_element=first)
        if self.attrs["schedule"]:
            call.schedule_hangup(self.attrs["schedule"], causes.CAUSES["normal_hangup"].with_source("Answer XML"))
            return NEXT
        return Hangup(cause)
