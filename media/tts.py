"""Text-to-speech for `<Speak>`: renders text or SSML to 8 kHz mono s16le PCM with espeak-ng.

`Tts.render` maps Plivo's `voice` (WOMAN, MAN, Polly.<Name>) and `language` (the list in the Plivo XML spec §4.4)
to an espeak-ng voice, runs espeak-ng as an asyncio subprocess (at most `max_parallel` at a time, text on stdin so
it can never be taken for an option), resamples its 22050 Hz output with soxr and keeps the result in a byte-bounded
LRU, so a prompt repeated across calls costs one process. Concurrent requests for the same prompt share one process.

It must not play anything, loop (`loop` is the player's job, wrap the PCM in `media.sources.PcmSource`), know about
calls or XML, or silently fall back for a language it does not know: an unknown language is a `TtsError` naming it.
"""

from __future__ import annotations

import asyncio
import re
import struct
from dataclasses import dataclass

import numpy as np

from media.resample import to_8k_mono
from media.sources import PcmCache


class TtsError(Exception):
    """Speech could not be rendered (unknown voice or language, espeak-ng missing, failing or timing out)."""


@dataclass(frozen=True)
class EspeakLanguage:
    """The espeak-ng voice used for one Plivo language, and how far it is from what was asked for."""

    espeak_voice: str
    approximation: str = ""


# Plivo language -> espeak-ng voice (measured on espeak-ng 1.51, see /work/shared/harness/media-notes.md §1).
# espeak-ng silently falls back for codes it half-knows (exit 0, no warning), so every code is mapped explicitly.
LANGUAGES: dict[str, EspeakLanguage] = {
    "en-US": EspeakLanguage("en-us"),
    "en-GB": EspeakLanguage("en-gb"),
    "en-AU": EspeakLanguage("en-gb", "no Australian English voice: `-v en-au` is byte-identical to en-gb"),
    "da-DK": EspeakLanguage("da"),
    "nl-NL": EspeakLanguage("nl"),
    "fr-FR": EspeakLanguage("fr-fr"),
    "fr-CA": EspeakLanguage("fr-fr", "no Canadian French voice: `-v fr-ca` output is identical to fr-fr"),
    "de-DE": EspeakLanguage("de"),
    "it-IT": EspeakLanguage("it"),
    "pl-PL": EspeakLanguage("pl"),
    "pt-PT": EspeakLanguage("pt"),
    "pt-BR": EspeakLanguage("pt-br"),
    "ru-RU": EspeakLanguage("ru"),
    "es-ES": EspeakLanguage("es"),
    "es-US": EspeakLanguage(
        "es-419", "no US Spanish voice (`-v es-us` gives Spain Spanish); Latin American Spanish is the closest"
    ),
    "sv-SE": EspeakLanguage("sv"),
}
_LANGUAGE_BY_LOWER = {code.lower(): code for code in LANGUAGES}

# Plivo voice -> espeak-ng variant. +f3 is a female voice at about 200 Hz F0, +m3 a male one at about 100 Hz.
VOICE_VARIANTS: dict[str, str] = {"WOMAN": "f3", "MAN": "m3"}

# `Polly.<Name>` voices are Amazon's; espeak-ng has none of them. They are approximated by the WOMAN/MAN variant of
# the requested language, using the gender of the Polly voice (male names below, every other name counts as female).
POLLY_MALE_NAMES = frozenset(
    {
        "matthew", "joey", "justin", "kevin", "stephen", "gregory", "brian", "arthur", "russell", "geraint",
        "aditya", "mathieu", "remi", "rémi", "liam", "hans", "daniel", "giorgio", "adriano", "enrique", "sergio",
        "miguel", "pedro", "andres", "andrés", "cristiano", "ricardo", "thiago", "jacek", "jan", "maxim", "mads",
        "ruben", "karl", "takumi",
    }
)  # fmt: skip

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024  # about 70 minutes of 8 kHz speech
DEFAULT_MAX_PARALLEL = 4
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_CHARS = 20_000

_SSML_TAG = re.compile(r"</?[A-Za-z][\w:.-]*(\s[^<>]*)?/?>")


def is_ssml(text: str) -> bool:
    """True when `text` contains markup (an SSML tag such as `<break time="1s"/>`), which needs espeak-ng `-m`.

    Without `-m` espeak-ng reads the tags aloud; with it, a lone `<` in plain text would be taken for markup, so a
    real tag is required, not just a `<`."""
    return _SSML_TAG.search(text) is not None


def resolve_language(language: str) -> EspeakLanguage:
    """The espeak-ng voice for a Plivo language code (case and `_`/`-` insensitive), or a `TtsError` naming it."""
    code = _LANGUAGE_BY_LOWER.get(language.strip().replace("_", "-").lower())
    if code is None:
        raise TtsError(f"unsupported Speak language {language!r}; supported: {', '.join(LANGUAGES)}")
    return LANGUAGES[code]


def resolve_voice(voice: str) -> str:
    """The espeak-ng variant (without the `+`) for a Plivo voice: WOMAN, MAN or Polly.<Name>."""
    name = voice.strip()
    variant = VOICE_VARIANTS.get(name.upper())
    if variant is not None:
        return variant
    if name.lower().startswith("polly."):
        polly_name = name[len("polly.") :].split("-")[0].lower()
        return VOICE_VARIANTS["MAN"] if polly_name in POLLY_MALE_NAMES else VOICE_VARIANTS["WOMAN"]
    raise TtsError(f"unsupported Speak voice {voice!r}; supported: WOMAN, MAN, Polly.<Name>")


def espeak_voice(voice: str, language: str) -> str:
    """The `-v` argument for espeak-ng, e.g. `en-us+f3`."""
    return f"{resolve_language(language).espeak_voice}+{resolve_voice(voice)}"


def wav_to_samples(wav: bytes) -> tuple[np.ndarray, int]:
    """Parse espeak-ng's WAV output (16-bit PCM; from --stdout its size fields are placeholders, so the data chunk is
    taken to run to the end) into (int16 samples shaped (n, channels), sample rate)."""
    if len(wav) < 12 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise TtsError(f"espeak-ng output is not WAV (starts with {wav[:12]!r})")
    offset = 12
    rate = channels = bits = 0
    while offset + 8 <= len(wav):
        chunk_id = wav[offset : offset + 4]
        (size,) = struct.unpack_from("<I", wav, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt ":
            _, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", wav, body)
        elif chunk_id == b"data":
            if bits != 16 or channels < 1 or rate <= 0:
                raise TtsError(f"unexpected espeak-ng WAV format: {channels} channel(s), {rate} Hz, {bits} bits")
            data = wav[body:]
            data = data[: len(data) - len(data) % (2 * channels)]
            return np.frombuffer(data, dtype="<i2").reshape(-1, channels), rate
        offset = body + size + (size & 1)
    raise TtsError("espeak-ng output has no data chunk")


class Tts:
    """Renders Speak text to 8 kHz PCM with espeak-ng; see the module docstring. One instance per process."""

    def __init__(
        self,
        *,
        executable: str = "espeak-ng",
        max_parallel: int = DEFAULT_MAX_PARALLEL,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        self.executable = executable
        self.timeout_s = timeout_s
        self.max_chars = max_chars
        self.cache = PcmCache(cache_bytes)
        self.processes_started = 0
        self._slots = asyncio.Semaphore(max_parallel)
        self._in_flight: dict[tuple[str, str, bool], asyncio.Task[bytes]] = {}

    async def render(self, text: str, voice: str = "WOMAN", language: str = "en-US") -> bytes:
        """Speech for `text` (plain text, or SSML when it contains tags) as 8 kHz mono s16le PCM.

        Raises TtsError for an unknown voice or language, text longer than `max_chars`, or an espeak-ng failure.
        Whitespace-only text renders to b"" without running espeak-ng.
        """
        variant = espeak_voice(voice, language)
        if not text.strip():
            return b""
        if len(text) > self.max_chars:
            raise TtsError(f"Speak text is {len(text)} characters, more than the {self.max_chars} allowed")
        key = (text, variant, is_ssml(text))
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._render_uncached(*key))
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        # shield: a caller hanging up must not cancel a render that other calls are waiting for.
        return await asyncio.shield(task)

    def _finished(self, key: tuple[str, str, bool], task: asyncio.Task[bytes]) -> None:
        self._in_flight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have hung up, and the error is theirs to log

    async def _render_uncached(self, text: str, variant: str, ssml: bool) -> bytes:
        async with self._slots:
            wav = await self._run_espeak(text, variant, ssml)
        samples, rate = wav_to_samples(wav)
        pcm = to_8k_mono(samples, rate)
        self.cache.put((text, variant, ssml), pcm)
        return pcm

    async def _run_espeak(self, text: str, variant: str, ssml: bool) -> bytes:
        args = ["-v", variant, *(["-m"] if ssml else []), "--stdin", "--stdout"]
        try:
            process = await asyncio.create_subprocess_exec(
                self.executable,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise TtsError(f"cannot run {self.executable}: {exc}") from exc
        self.processes_started += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                stdout, stderr = await process.communicate(text.encode("utf-8"))
        except TimeoutError:
            process.kill()
            await process.wait()
            raise TtsError(f"{self.executable} -v {variant} took longer than {self.timeout_s} s") from None
        except BaseException:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        problem = stderr.decode("utf-8", "replace").strip()
        if process.returncode != 0 or not stdout:
            raise TtsError(
                f"{self.executable} -v {variant} failed (exit {process.returncode}): {problem or 'no audio produced'}"
            )
        return stdout
