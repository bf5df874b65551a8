"""Audio fetching against a real local HTTP server: WAV and MP3 at several rates decode to the right duration and
frequency, and every failure is an AudioFetchError naming the URL and the cause."""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import threading
import time
import wave
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import lameenc
import numpy as np
import pytest

from media.fetch import AudioFetcher, AudioFetchError, UndecodableAudio, decode_to_pcm, sniff_format
from media.recorder import lame_info_frame

TONE_HZ = 1000
SECONDS = 1.5


# -- generated fixtures ------------------------------------------------------------------------------------------------
def tone(rate: int, channels: int = 1, seconds: float = SECONDS, freq: float = TONE_HZ) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = (np.sin(2 * np.pi * freq * t) * 12_000).astype(np.int16)
    return np.column_stack([x] * channels) if channels > 1 else x[:, None]


def make_wav(rate: int, channels: int = 1, width: int = 2) -> bytes:
    x = tone(rate, channels)
    if width == 2:
        raw = x.astype("<i2").tobytes()
    elif width == 3:
        raw = (x.astype("<i4") << 8).reshape(-1).view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        raise ValueError(width)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(raw)
    return buf.getvalue()


def make_float_wav(rate: int) -> bytes:
    """IEEE float WAV (format 3), which stdlib `wave` rejects: decoded through miniaudio."""
    data = (tone(rate)[:, 0] / 32768).astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHHH", 3, 1, rate, rate * 4, 4, 32, 0)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def make_mp3(rate: int, channels: int, kbps: int, *, gapless_tag: bool) -> bytes:
    """CBR MP3 from lameenc; with `gapless_tag` a LAME Info frame carries the encoder delay and padding, as the
    `lame` command line writes it."""
    x = tone(rate, channels)
    encoder = lameenc.Encoder()
    encoder.set_in_sample_rate(rate)
    encoder.set_channels(channels)
    encoder.set_bit_rate(kbps)
    encoder.set_quality(5)
    mp3 = bytes(encoder.encode(x.astype("<i2").tobytes()) + encoder.flush())
    if not gapless_tag:
        return mp3
    frame_bytes = 144_000 * kbps // rate  # MPEG-1 layer III; choose rate/kbps so there is no padding slot
    assert len(mp3) % frame_bytes == 0
    frames = len(mp3) // frame_bytes
    tag = lame_info_frame(
        mp3[:4],
        frame_bytes=frame_bytes,
        mp3_frames=frames,
        stream_bytes=len(mp3) + frame_bytes,
        delay=576,
        padding=frames * 1152 - 576 - len(x),
        kbps=kbps,
    )
    return tag + mp3


@dataclass
class AudioServer:
    base: str
    files: dict[str, tuple[bytes, str]]
    hits: Counter[str] = field(default_factory=Counter)


@pytest.fixture(scope="module")
def server() -> Iterator[AudioServer]:
    files: dict[str, tuple[bytes, str]] = {
        "/8k.wav": (make_wav(8000), "audio/wav"),
        "/16k.wav": (make_wav(16000), "audio/x-wav"),
        "/44k-stereo.wav": (make_wav(44100, 2), "audio/wav"),
        "/48k-24bit.wav": (make_wav(48000, 1, width=3), "audio/wav"),
        "/float.wav": (make_float_wav(22050), "audio/wav"),
        "/mislabelled.wav": (make_wav(16000), "text/plain"),
        "/48k-stereo.mp3": (make_mp3(48000, 2, 128, gapless_tag=True), "audio/mpeg"),
        "/44k-untagged.mp3": (make_mp3(44100, 2, 128, gapless_tag=False), "audio/mpeg"),
        "/garbage.mp3": (b"<html><body>Sorry, this file moved</body></html>" * 20, "audio/mpeg"),
        "/page.html": (b"<html>hello</html>", "text/html"),
        "/big.wav": (make_wav(44100, 2), "audio/wav"),
    }
    hits: Counter[str] = Counter()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            hits[self.path] += 1
            if self.path == "/slow.wav":
                time.sleep(0.6)
            if self.path == "/redirect.wav":
                self.send_response(302)
                self.send_header("Location", "/8k.wav")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path == "/big-unsized.wav":  # no Content-Length: streamed until the connection closes
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(files["/big.wav"][0])
                self.close_connection = True
                return
            entry = files.get(self.path.split("?")[0].replace("/slow", "/8k"))
            if entry is None:
                self.send_error(404, "Not Found")
                return
            body, content_type = entry
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield AudioServer(f"http://127.0.0.1:{httpd.server_address[1]}", files, hits)
    finally:
        httpd.shutdown()
        httpd.server_close()


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def dominant_hz(pcm: bytes) -> float:
    x = samples(pcm)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / 8000)[int(np.argmax(spectrum))])


# -- decoding ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/8k.wav", "/16k.wav", "/44k-stereo.wav", "/48k-24bit.wav", "/float.wav", "/48k-stereo.mp3"]
)
async def test_fetch_decodes_to_the_right_duration_and_frequency(server: AudioServer, path: str) -> None:
    async with AudioFetcher() as fetcher:
        pcm = await fetcher.fetch(server.base + path)
    assert abs(len(pcm) / 16000 - SECONDS) <= 0.030
    assert dominant_hz(pcm) == pytest.approx(TONE_HZ, abs=2)
    level = np.sqrt(np.mean(samples(pcm)[800:-800] ** 2))
    # no gain change (MP3 is lossy: within 1 dB); stereo is averaged, not summed
    assert level == pytest.approx(12_000 / np.sqrt(2), rel=0.12 if path.endswith(".mp3") else 0.01)


async def test_untagged_mp3_keeps_encoder_delay_and_padding(server: AudioServer) -> None:
    # Without a LAME/Xing tag no decoder can know the 1105-sample delay (25 ms at 44.1 kHz) and the padding
    # (up to one 1152-sample frame): the PCM is up to ~52 ms longer, never shorter.
    async with AudioFetcher() as fetcher:
        pcm = await fetcher.fetch(server.base + "/44k-untagged.mp3")
    assert SECONDS <= len(pcm) / 16000 <= SECONDS + 0.055
    assert dominant_hz(pcm) == pytest.approx(TONE_HZ, abs=2)


async def test_format_is_sniffed_not_taken_from_content_type(server: AudioServer) -> None:
    async with AudioFetcher() as fetcher:
        pcm = await fetcher.fetch(server.base + "/mislabelled.wav")
    assert abs(len(pcm) / 16000 - SECONDS) <= 0.030


async def test_redirect_is_followed(server: AudioServer) -> None:
    async with AudioFetcher() as fetcher:
        assert len(await fetcher.fetch(server.base + "/redirect.wav")) == int(SECONDS * 16000)


# -- cache -------------------------------------------------------------------------------------------------------------
async def test_second_fetch_comes_from_the_cache(server: AudioServer) -> None:
    url = server.base + "/16k.wav?cache-test"
    async with AudioFetcher() as fetcher:
        first = await fetcher.fetch(url)
        second = await fetcher.fetch(url)
    assert second is first
    assert server.hits["/16k.wav?cache-test"] == 1
    assert fetcher.downloads_started == 1


async def test_concurrent_fetches_of_one_url_share_a_download(server: AudioServer) -> None:
    async with AudioFetcher() as fetcher:
        results = await asyncio.gather(*(fetcher.fetch(server.base + "/44k-stereo.wav") for _ in range(5)))
    assert fetcher.downloads_started == 1
    assert all(r is results[0] for r in results)


async def test_a_caller_hanging_up_does_not_cancel_a_shared_download(server: AudioServer) -> None:
    async with AudioFetcher() as fetcher:
        hung_up = asyncio.ensure_future(fetcher.fetch(server.base + "/slow.wav?shared"))
        waiting = asyncio.ensure_future(fetcher.fetch(server.base + "/slow.wav?shared"))
        await asyncio.sleep(0.05)
        hung_up.cancel()
        pcm = await waiting
    assert len(pcm) == int(SECONDS * 16000) and fetcher.downloads_started == 1


async def test_cache_is_bounded_in_bytes(server: AudioServer) -> None:
    async with AudioFetcher(cache_bytes=30_000) as fetcher:  # one 1.5 s file is 24 000 bytes of PCM
        await fetcher.fetch(server.base + "/8k.wav")
        await fetcher.fetch(server.base + "/16k.wav")
        assert len(fetcher.cache) == 1 and fetcher.cache.size_bytes == 24_000
        await fetcher.fetch(server.base + "/8k.wav")
    assert fetcher.downloads_started == 3


async def test_shared_client_is_used_and_left_open(server: AudioServer) -> None:
    async with httpx.AsyncClient() as client:
        async with AudioFetcher(client) as fetcher:
            await fetcher.fetch(server.base + "/8k.wav")
        assert not client.is_closed


# -- failures ----------------------------------------------------------------------------------------------------------
async def fetch_error(url: str, **options: Any) -> AudioFetchError:
    async with AudioFetcher(**options) as fetcher:
        with pytest.raises(AudioFetchError) as caught:
            await fetcher.fetch(url)
    assert caught.value.url == url and url in str(caught.value)
    return caught.value


async def test_404_names_the_status(server: AudioServer) -> None:
    error = await fetch_error(server.base + "/missing.mp3")
    assert error.cause == "HTTP 404 Not Found"


async def test_slow_server_times_out(server: AudioServer) -> None:
    started = time.monotonic()
    error = await fetch_error(server.base + "/slow.wav", timeout_s=0.3)
    assert "timed out after 0.3 s" in error.cause
    assert time.monotonic() - started < 0.55


async def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    error = await fetch_error(f"http://127.0.0.1:{port}/a.wav")
    assert error.cause.startswith("connection failed")


async def test_too_large_body_with_and_without_content_length(server: AudioServer) -> None:
    error = await fetch_error(server.base + "/big.wav", max_bytes=100_000)
    assert "exceeds the 100000 byte limit" in error.cause and "body of" in error.cause
    error = await fetch_error(server.base + "/big-unsized.wav", max_bytes=100_000)
    assert error.cause == "body exceeds the 100000 byte limit"


async def test_audio_longer_than_allowed(server: AudioServer) -> None:
    error = await fetch_error(server.base + "/44k-stereo.wav", max_duration_s=1.0)
    assert "longer than the 1 s allowed" in error.cause
    error = await fetch_error(server.base + "/48k-stereo.mp3", max_duration_s=1.0)
    assert "longer than the 1 s allowed" in error.cause


async def test_undecodable_files(server: AudioServer) -> None:
    error = await fetch_error(server.base + "/garbage.mp3")
    assert error.cause.startswith("cannot decode") and "MP3" in error.cause
    error = await fetch_error(server.base + "/page.html")
    assert "not a WAV or MP3 file" in error.cause and "text/html" in error.cause


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.mp3", "/local/path.wav", "http://"])
async def test_only_http_urls_are_fetched(url: str) -> None:
    error = await fetch_error(url)
    assert "unsupported URL scheme" in error.cause


# -- sniffing and decoding without HTTP ------------------------------------------------------------------------------
def test_sniffing() -> None:
    assert sniff_format(make_wav(8000)) == "wav"
    assert sniff_format(b"ID3\x04\x00" + bytes(20)) == "mp3"
    assert sniff_format(make_mp3(48000, 1, 64, gapless_tag=False)) == "mp3"
    assert sniff_format(b"\xff\xf1\x50\x80") is None  # ADTS AAC: sync word but layer 0
    assert sniff_format(b"OggS\x00") is None


def test_decode_errors() -> None:
    with pytest.raises(UndecodableAudio, match="truncated|corrupt"):
        decode_to_pcm(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    with pytest.raises(UndecodableAudio, match="no audio frames"):
        decode_to_pcm(make_wav(8000)[:44])
