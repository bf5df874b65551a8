"""Collecting DTMF keys while prompts play (barge-in), shared by GetDigits and GetInput.

`play_prompts_until_key` runs nested Speak/Play/Wait verbs and stops them at the first key; `collect_keys` then
gathers keys until numDigits, the finish key, or a timeout. Keys come from the call's queue (RFC 4733 events and
SIP INFO, de-duplicated by media/dtmf). Nothing here posts anything: the verbs decide what their action gets.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from .base import Verb


@dataclass(slots=True)
class Collected:
    digits: str = ""
    finish_key: str = ""  # the finishOnKey pressed, if that ended the input
    invalid: str = ""  # the first key not in validDigits, if one ended the input
    timed_out: bool = False


async def play_prompts_until_key(call: Any, prompts: list[Verb]) -> str | None:
    """Play `prompts` in order; return the first key pressed (stopping the prompt), or None when they all ended."""
    play = asyncio.ensure_future(_play_all(call, prompts))
    key = asyncio.ensure_future(call.digits.get())
    try:
        done, _ = await asyncio.wait({play, key}, return_when=asyncio.FIRST_COMPLETED)
        if key in done:
            return str(key.result())
        play.result()  # surface errors from the prompts
        return None
    finally:
        for task in (play, key):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def _play_all(call: Any, prompts: list[Verb]) -> None:
    for prompt in prompts:
        await prompt.run(call)


async def next_key(call: Any, timeout: float) -> str | None:
    try:
        return str(await asyncio.wait_for(call.digits.get(), timeout))
    except TimeoutError:
        return None


async def collect_keys(call: Any, *, first_key: str | None, first_timeout: float, next_timeout: float,
                       num_digits: int | None, finish_keys: str, valid_keys: str) -> Collected:
    """Keys until `num_digits`, a finish key (not included), an invalid key, or a timeout."""
    result = Collected()
    key = first_key if first_key is not None else await next_key(call, first_timeout)
    while key is not None:
        if key in finish_keys:
            result.finish_key = key
            return result
        if key not in valid_keys:
            result.invalid = key
            return result
        result.digits += key
        if num_digits is not None and len(result.digits) >= num_digits:
            return result
        key = await next_key(call, next_timeout)
    result.timed_out = True
    return result
