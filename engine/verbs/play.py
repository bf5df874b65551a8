"""`<Play>` (spec §4.5): play an mp3/wav file from a URL, `loop` times (0 = until something else ends the call).

Schema only for now: the body is the file's URL (http(s) or relative to the document's URL, resolved at run time).
What does not live here: fetching, decoding and caching audio (media/fetch, media/sources).
"""

from __future__ import annotations

from typing import Any, ClassVar

from media.fetch import AudioFetchError

from .base import NEXT, Attr, Outcome, Verb, parse_url


class Play(Verb):
    """Play the file at the body URL."""

    TAG = "Play"
    ATTRIBUTES: ClassVar[dict[str, Attr]] = {
        "loop": Attr("int", default=1, min=0),  # 0 means forever (FW: 10000 loops)
    }
    TEXT = "required"
    ANSWERS = True

    def validate(self) -> None:
        try:
            parse_url(self.text)
        except ValueError as exc:
            raise self.error(f"body must be the audio file's URL: {exc}") from None

    async def run(self, call: Any) -> Outcome:
        url = call.resolve(self.text)
        try:
            pcm = await call.engine.fetcher.fetch(url)
        except AudioFetchError as exc:
            # A 404, timeout or undecodable file ends this verb with a clear error; the call goes on.
            call.log.error("play_failed", url=exc.url, cause=exc.cause)
            call.timeline.add("play_failed", cause=exc.cause)
            return NEXT
        await call.play_pcm(pcm, loop=self.attrs["loop"])
        return NEXT
