"""`<PreAnswer>` (spec §4.8): send early media (183 with SDP) without answering, and run the children in it.

No attributes. Children are those of spec §1.2 (Message is listed there but is refused by the registry as
unsupported). It does not answer (ANSWERS = False).
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import NEXT, Attr, Next, Outcome, Verb


class PreAnswer(Verb):
    """Early media: the children play before the call is answered."""

    TAG = "PreAnswer"
    ATTRIBUTES: ClassVar[dict[str, Attr]] = {}
    CHILDREN = frozenset({"Speak", "Play", "Wait", "GetDigits", "Redirect", "Message", "DTMF"})
    ANSWERS = False

    async def run(self, call: Any) -> Outcome:
        """183 with SDP, then the children as early media; the call stays unanswered (not billed)."""
        await call.pre_answer()
        for child in self.children:
            call.timeline.add("verb", verb=child.TAG, line=child.line, early=True)
            outcome = await child.run(call)
            if not isinstance(outcome, Next):
                return outcome
        return NEXT
