"""Per-frame audio detectors fed with what the far end sends: silence/speech (for `<Wait silence="true">` and the
`<Record timeout>`) and a voicemail beep (for `<Wait beep="true">`).

Both are `media.frames.AudioSink`s: the call's media path hands them each received 20 ms frame (8 kHz mono s16le)
and the verb polls their state. Time is counted in frames written (20 ms each), not wall-clock. They must not
block, do I/O, keep timers or decide what the call does next: they only report.

Levels are RMS dBFS relative to a full-scale square wave (a full-scale sine is -3 dBFS; digital silence is
`FLOOR_DBFS`). Thresholds, measured on 298 s of espeak-ng speech (6 languages x WOMAN/MAN, including sustained
"Eeee/Mmmm" vowels), white noise and generated tones (see tests/unit/test_detect.py, which checks them):

- Silence: -40 dBFS. The median active speech frame is -24 dBFS (10th percentile about -45); Asterisk's default
  `silencethreshold=256` (mean |x|) is about the same (-41..-40 dBFS); line noise on a quiet call is -60..-50
  dBFS, so it counts as silence with a 10 dB margin. Short dips inside speech do not matter because minSilence
  is hundreds of ms or more.
- Beep: the strongest spectral peak (Hann window, 50 Hz bins) lies in 600-2000 Hz, holds >= 85 % of the frame's
  energy in its +-100 Hz main lobe, the frame is above -45 dBFS, and this repeats at the same frequency (+-50 Hz)
  for >= 100 ms. A clean tone scores 1.00, a 1 kHz tone 10 dB above white noise about 0.89 (10th percentile),
  white noise at most 0.34, DTMF at most 0.50, US busy (480+620 Hz) at most 0.79; speech reached at most 1
  consecutive frame (voiced harmonics are not one line), so 5 frames leave a wide margin. The band starts at
  600 Hz because US ringback (440+480 Hz) and dial tone (350+440 Hz) score 1.00, looking like one tone at this
  resolution; 425 Hz European tones are excluded too. Beeps at 600-2000 Hz (850, 950, 1000, 1400 Hz are common
  on voicemail systems) are inside; a 440 Hz beep needs `band_hz=(400, 500)`.
"""

from __future__ import annotations

import math

import numpy as np

from media.frames import FRAME_BYTES, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE

FRAME_S = FRAME_MS / 1000
FLOOR_DBFS = -120.0

DEFAULT_SILENCE_THRESHOLD_DBFS = -40.0
DEFAULT_MIN_SPEECH_S = 0.06

DEFAULT_BEEP_BAND_HZ = (600.0, 2000.0)
DEFAULT_BEEP_PURITY = 0.85
DEFAULT_BEEP_MIN_LEVEL_DBFS = -45.0
DEFAULT_BEEP_MIN_TONE_S = 0.1
DEFAULT_BEEP_END_S = 0.04

_BIN_HZ = SAMPLE_RATE / FRAME_SAMPLES  # 50 Hz
_WINDOW = np.hanning(FRAME_SAMPLES)
_MAIN_LOBE_BINS = 2  # a Hann window's main lobe is +-2 bins
_LOWEST_BIN = 2  # ignore DC and below 100 Hz (hum, offsets) when looking for the dominant tone


def _samples(pcm: bytes) -> np.ndarray:
    if len(pcm) != FRAME_BYTES:
        raise ValueError(f"a frame is {FRAME_BYTES} bytes of PCM, got {len(pcm)}")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def frame_dbfs(pcm: bytes) -> float:
    """RMS level of one frame in dBFS (full-scale square = 0), `FLOOR_DBFS` for digital silence."""
    x = _samples(pcm)
    rms = math.sqrt(float(np.dot(x, x)) / len(x))
    return max(FLOOR_DBFS, 20.0 * math.log10(rms / 32768.0)) if rms > 0 else FLOOR_DBFS


class SilenceDetector:
    """Tracks speech and silence frame by frame.

    A frame is voiced when its RMS level is at or above `threshold_dbfs`. `silent_for` is the length of the current
    run of unvoiced frames (any voiced frame resets it); `heard_speech` latches once `min_speech_s` of consecutive
    voiced frames have been seen; `silence_reached` is `silent_for >= min_silence_s`. Whether silence must follow
    speech (Record) or may start at once (Wait silence) is the caller's choice.
    """

    def __init__(
        self,
        threshold_dbfs: float = DEFAULT_SILENCE_THRESHOLD_DBFS,
        min_silence_s: float = 2.0,
        *,
        min_speech_s: float = DEFAULT_MIN_SPEECH_S,
    ) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.min_silence_s = min_silence_s
        self.min_speech_frames = max(1, round(min_speech_s / FRAME_S))
        self.reset()

    def reset(self) -> None:
        self.frames_seen = 0
        self.silent_frames = 0
        self.voiced_run = 0
        self.heard_speech = False
        self.last_dbfs = FLOOR_DBFS

    def write_frame(self, pcm: bytes) -> None:
        self.frames_seen += 1
        self.last_dbfs = frame_dbfs(pcm)
        if self.last_dbfs >= self.threshold_dbfs:
            self.silent_frames = 0
            self.voiced_run += 1
            if self.voiced_run >= self.min_speech_frames:
                self.heard_speech = True
        else:
            self.silent_frames += 1
            self.voiced_run = 0

    @property
    def silent_for(self) -> float:
        """Seconds of unbroken silence up to the last frame written."""
        return self.silent_frames * FRAME_S

    @property
    def silence_reached(self) -> bool:
        return self.silent_frames > 0 and self.silent_for >= self.min_silence_s - 1e-9

    @property
    def elapsed(self) -> float:
        """Seconds of audio written since creation or `reset()`."""
        return self.frames_seen * FRAME_S


class BeepDetector:
    """Detects a voicemail beep: one steady tone in `band_hz` lasting at least `min_tone_s`; see the module
    docstring for the measured thresholds.

    After `beep_detected` latches (at the frame that completes `min_tone_s`), it keeps following the tone and sets
    `beep_ended` once `end_s` of frames no longer carry it; `beep_ended_at` is the time of the first such frame,
    which is when a message should start. Times are seconds since creation or `reset()`.
    """

    def __init__(
        self,
        *,
        band_hz: tuple[float, float] = DEFAULT_BEEP_BAND_HZ,
        min_tone_s: float = DEFAULT_BEEP_MIN_TONE_S,
        purity: float = DEFAULT_BEEP_PURITY,
        min_level_dbfs: float = DEFAULT_BEEP_MIN_LEVEL_DBFS,
        end_s: float = DEFAULT_BEEP_END_S,
    ) -> None:
        self.band_hz = band_hz
        self.purity = purity
        self.min_level_dbfs = min_level_dbfs
        self.min_tone_frames = max(1, round(min_tone_s / FRAME_S))
        self.end_frames = max(1, round(end_s / FRAME_S))
        self.reset()

    def reset(self) -> None:
        self.frames_seen = 0
        self.beep_detected = False
        self.beep_ended = False
        self.beep_started_at: float | None = None
        self.beep_ended_at: float | None = None
        self.beep_frequency: float | None = None
        self._run_frequencies: list[float] = []
        self._misses = 0

    def tone_in_frame(self, pcm: bytes) -> float | None:
        """The frequency (Hz) of the single dominant in-band tone in this frame, or None."""
        x = _samples(pcm)
        power = np.abs(np.fft.rfft(x * _WINDOW)) ** 2
        power[:_LOWEST_BIN] = 0.0
        total = float(power.sum())
        if total <= 0.0 or frame_dbfs(pcm) < self.min_level_dbfs:
            return None
        peak = int(np.argmax(power))
        lobe = float(power[max(0, peak - _MAIN_LOBE_BINS) : peak + _MAIN_LOBE_BINS + 1].sum())
        if lobe / total < self.purity:
            return None
        frequency = round((peak + _parabolic_offset(power, peak)) * _BIN_HZ, 1)
        low, high = self.band_hz
        return frequency if low <= frequency <= high else None

    def write_frame(self, pcm: bytes) -> None:
        self.frames_seen += 1
        if self.beep_ended:
            return
        frequency = self.tone_in_frame(pcm)
        if self.beep_detected:
            assert self.beep_frequency is not None
            if frequency is not None and abs(frequency - self.beep_frequency) <= _BIN_HZ:
                self._misses = 0
                return
            self._misses += 1
            if self._misses >= self.end_frames:
                self.beep_ended = True
                self.beep_ended_at = (self.frames_seen - self._misses) * FRAME_S
            return
        if frequency is None:
            self._run_frequencies.clear()
            return
        if self._run_frequencies and abs(frequency - self._run_frequencies[-1]) > _BIN_HZ:
            self._run_frequencies.clear()  # a different tone: start a new run
        self._run_frequencies.append(frequency)
        if len(self._run_frequencies) >= self.min_tone_frames:
            self.beep_detected = True
            self.beep_frequency = float(np.mean(self._run_frequencies))
            self.beep_started_at = (self.frames_seen - len(self._run_frequencies)) * FRAME_S

    @property
    def elapsed(self) -> float:
        """Seconds of audio written since creation or `reset()`."""
        return self.frames_seen * FRAME_S


def _parabolic_offset(power: np.ndarray, peak: int) -> float:
    """Fractional-bin offset of a spectral peak from a parabola through the log power of its neighbours."""
    if peak <= 0 or peak >= len(power) - 1:
        return 0.0
    a, b, c = (math.log(float(power[i]) + 1e-12) for i in (peak - 1, peak, peak + 1))
    denominator = a - 2.0 * b + c
    return 0.0 if denominator == 0.0 else max(-0.5, min(0.5, 0.5 * (a - c) / denominator))
