"""Downloads the audio files `<Play>` (and dialMusic, confirmSound, invalidDigitsSound...) point at and decodes
them to 8 kHz mono s16le PCM.

`AudioFetcher.fetch(url)` GETs an http/https URL with a shared httpx.AsyncClient (a total time limit and a body
size limit), recognises WAV or MP3 by content sniffing (RIFF/WAVE, ID3 or an MPEG audio frame header; the
Content-Type is only a hint, servers get it wrong), decodes in a worker thread so the event loop keeps pacing RTP,
resamples with soxr and keeps the PCM in a byte-bounded LRU keyed by URL. Concurrent fetches of one URL share one
download.

Every failure (bad scheme, HTTP error status, timeout, connection error, body or audio too long, undecodable file)
is an `AudioFetchError` naming the URL and the cause; the caller logs it and ends the verb, the call goes on.
It must not read local files (`file://` or paths), play anything or know about calls.
"""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import Iterator
from types import TracebackType
from urllib.parse import urlsplit

import httpx
import miniaudio  # type: ignore[import-untyped]
import numpy as np

from media.resample import StreamResampler, to_int16
from media.sources import PcmCache

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_DURATION_S = 3600.0  # one hour is 57.6 MB of 8 kHz PCM
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024  # about 4.6 hours of 8 kHz PCM
DECODE_CHUNK_FRAMES = 32768  # source frames per decode step: bounds memory, not the result

# MPEG audio frame header tables (ISO 11172-3 / 13818-3), enough to recognise a frame.
_MPEG_VERSION_RESERVED = 0b01
_MPEG_LAYER_RESERVED = 0b00


class AudioFetchError(Exception):
    """An audio URL could not be turned into PCM. `url` and `cause` are also available separately."""

    def __init__(self, url: str, cause: str) -> None:
        super().__init__(f"cannot play {url}: {cause}")
        self.url = url
        self.cause = cause


class UndecodableAudio(Exception):
    """The bytes are not audio this module can decode (the message says why)."""


def sniff_format(data: bytes) -> str | None:
    """'wav', 'mp3' or None, from the first bytes of a file."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3" or is_mpeg_audio_frame_header(data[:4]):
        return "mp3"
    return None


def is_mpeg_audio_frame_header(header: bytes) -> bool:
    """True when `header` is a plausible MPEG-1/2/2.5 audio frame header (11-bit sync, valid version, layer,
    bitrate and sample-rate indexes)."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return False
    version = (header[1] >> 3) & 0b11
    layer = (header[1] >> 1) & 0b11
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 0b11
    return (
        version != _MPEG_VERSION_RESERVED and layer != _MPEG_LAYER_RESERVED and bitrate_index != 0xF and rate_index != 3
    )


def decode_to_pcm(data: bytes, *, content_type: str = "", max_duration_s: float = DEFAULT_MAX_DURATION_S) -> bytes:
    """Decode a WAV (any PCM width, rate and channel count; A-law, µ-law, float or extensible through miniaudio) or
    an MP3 file to 8 kHz mono s16le PCM. Blocking and CPU-bound: run it in a worker thread.

    Raises UndecodableAudio when the format is not recognised, the file is corrupt or empty, or it is longer than
    `max_duration_s`.
    """
    kind = sniff_format(data)
    if kind is None and any(hint in content_type.lower() for hint in ("mpeg", "mp3")):
        kind = "mp3"  # MP3 with junk before the first frame: the MPEG decoder resynchronises
    if kind is None:
        hint = f", Content-Type {content_type!r}" if content_type else ""
        raise UndecodableAudio(f"not a WAV or MP3 file (starts with {data[:16]!r}{hint})")
    if kind == "wav":
        try:
            pcm = _decode_pcm_wav(data, max_duration_s)
        except wave.Error:
            pcm = None  # not plain PCM (extensible, float, G.711...): dr_wav handles those
        except EOFError as exc:
            raise UndecodableAudio(f"truncated WAV header ({exc})") from exc
        if pcm is not None:
            return pcm
    return _decode_with_miniaudio(data, kind, max_duration_s)


def _decode_pcm_wav(data: bytes, max_duration_s: float) -> bytes:
    with wave.open(io.BytesIO(data), "rb") as wav:
        channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        if channels < 1 or rate <= 0 or width not in (1, 2, 3, 4):
            raise UndecodableAudio(f"unsupported WAV: {channels} channel(s), {rate} Hz, {8 * width}-bit")
        resampler = StreamResampler(rate)
        parts: list[bytes] = []
        frames_read = 0
        while raw := wav.readframes(DECODE_CHUNK_FRAMES):
            samples = to_int16(raw, width)
            samples = samples[: len(samples) - len(samples) % channels].reshape(-1, channels)
            frames_read += len(samples)
            _check_duration(frames_read / rate, max_duration_s)
            parts.append(resampler.feed(samples))
        parts.append(resampler.finish())
    pcm = b"".join(parts)
    if not pcm:
        raise UndecodableAudio("the WAV file has no audio frames")
    return pcm


def _decode_with_miniaudio(data: bytes, kind: str, max_duration_s: float) -> bytes:
    get_info = miniaudio.wav_get_info if kind == "wav" else miniaudio.mp3_get_info
    try:
        info = get_info(data)
        if info.sample_rate <= 0 or info.nchannels < 1:
            raise UndecodableAudio(f"unsupported {kind.upper()}: {info.nchannels} channel(s), {info.sample_rate} Hz")
        if info.num_frames:
            _check_duration(info.num_frames / info.sample_rate, max_duration_s)
        resampler = StreamResampler(info.sample_rate)
        parts: list[bytes] = []
        frames_read = 0
        for chunk in _stream(data, info.nchannels, info.sample_rate):
            samples = np.frombuffer(chunk, dtype=np.int16).reshape(-1, info.nchannels)
            frames_read += len(samples)
            _check_duration(frames_read / info.sample_rate, max_duration_s)
            parts.append(resampler.feed(samples))
        parts.append(resampler.finish())
    except miniaudio.MiniaudioError as exc:
        raise UndecodableAudio(f"corrupt or unsupported {kind.upper()} ({exc})") from exc
    pcm = b"".join(parts)
    if not pcm:
        raise UndecodableAudio(f"the {kind.upper()} file has no audio frames")
    return pcm


def _stream(data: bytes, nchannels: int, sample_rate: int) -> Iterator[bytes]:
    # At the file's own rate and channel count, so miniaudio's (aliasing) resampler is never used.
    for chunk in miniaudio.stream_memory(
        data, nchannels=nchannels, sample_rate=sample_rate, frames_to_read=DECODE_CHUNK_FRAMES
    ):
        yield chunk.tobytes()


def _check_duration(duration_s: float, max_duration_s: float) -> None:
    if duration_s > max_duration_s:
        raise UndecodableAudio(f"audio is longer than the {max_duration_s:g} s allowed")


class AudioFetcher:
    """Fetches and decodes audio URLs to 8 kHz PCM, with a URL-keyed LRU; see the module docstring.

    Pass the engine's shared `client` (it is not closed here), or let the fetcher create and own one.
    """

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_duration_s: float = DEFAULT_MAX_DURATION_S,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_duration_s = max_duration_s
        self.cache = PcmCache(cache_bytes)
        self.downloads_started = 0
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), follow_redirects=True)
        self._in_flight: dict[str, asyncio.Task[bytes]] = {}

    async def __aenter__(self) -> AudioFetcher:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this fetcher created it."""
        if self._owns_client:
            await self._client.aclose()

    async def fetch(self, url: str) -> bytes:
        """The audio at `url` as 8 kHz mono s16le PCM, from the cache when it has been fetched before.

        Raises AudioFetchError (naming the URL and the cause) on any failure.
        """
        parts = urlsplit(url.strip())
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise AudioFetchError(url, f"unsupported URL scheme {parts.scheme!r} (only http and https are fetched)")
        cached = self.cache.get(url)
        if cached is not None:
            return cached
        task = self._in_flight.get(url)
        if task is None:
            task = asyncio.ensure_future(self._fetch_uncached(url))
            self._in_flight[url] = task
            task.add_done_callback(lambda done: self._finished(url, done))
        # shield: one caller hanging up must not cancel a download that other calls are waiting for.
        return await asyncio.shield(task)

    def _finished(self, url: str, task: asyncio.Task[bytes]) -> None:
        self._in_flight.pop(url, None)
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have hung up, and the error is theirs to log

    async def _fetch_uncached(self, url: str) -> bytes:
        body, content_type = await self._download(url)
        try:
            pcm = await asyncio.to_thread(
                decode_to_pcm, body, content_type=content_type, max_duration_s=self.max_duration_s
            )
        except UndecodableAudio as exc:
            raise AudioFetchError(url, f"cannot decode {len(body)} bytes: {exc}") from exc
        self.cache.put(url, pcm)
        return pcm

    async def _download(self, url: str) -> tuple[bytes, str]:
        self.downloads_started += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._client.stream("GET", url, follow_redirects=True) as response:
                    if response.status_code >= 400:
                        raise AudioFetchError(url, f"HTTP {response.status_code} {response.reason_phrase}".rstrip())
                    length = response.headers.get("content-length", "")
                    if length.isdigit() and int(length) > self.max_bytes:
                        raise AudioFetchError(url, f"body of {length} bytes exceeds the {self.max_bytes} byte limit")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise AudioFetchError(url, f"body exceeds the {self.max_bytes} byte limit")
                    return bytes(body), response.headers.get("content-type", "")
        except (TimeoutError, httpx.TimeoutException):
            raise AudioFetchError(url, f"timed out after {self.timeout_s:g} s") from None
        except httpx.ConnectError as exc:
            raise AudioFetchError(url, f"connection failed ({exc or type(exc).__name__})") from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise AudioFetchError(url, f"invalid URL ({exc})") from exc
        except httpx.HTTPError as exc:
            raise AudioFetchError(url, f"download failed ({type(exc).__name__}: {exc})") from exc
