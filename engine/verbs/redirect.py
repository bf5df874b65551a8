"""`<Redirect>` (spec §4.13): drop the rest of the document and continue with the XML at the body URL.

The body is an http(s) URL or a reference relative to the document's URL (spec §0.4), resolved at run time.
The class is `RedirectVerb`, not `Redirect`, so that `run()` can return the `base.Redirect` outcome without shadowing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Attr, Outcome, Redirect, Verb, parse_url


class RedirectVerb(Verb):
    """Fetch the body URL (with `method`) and run its document instead."""

    TAG = "Redirect"
    ATTRIBUTES: ClassVar[dict[str, Attr]] = {
        "method": Attr("method", default="POST"),
    }
    TEXT = "required"
    ANSWERS = True

    def validate(self) -> None:
        try:
            parse_url(self.text)
        except ValueError as exc:
            raise self.error(f"body must be the URL to redirect to: {exc}") from None

    async def run(self, call: Any) -> Outcome:
        return Redirect(call.resolve(self.text), self.attrs["method"])
