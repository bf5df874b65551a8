"""Recording files: where they are written (`storage.recordings_dir`), how they are named, and the parameters the
app receives about them (spec §4.11: RecordUrl, RecordingID, RecordingDuration, RecordingDurationMs,
RecordingStartMs, RecordingEndMs, RecordFile, RecordingFileFormat, Digits).

Audio capture itself is media.recorder; serving the files over HTTP is engine.http_api.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from media.recorder import Recorder

RECORDINGS_PATH = "/v1/recordings/"


class Recording:
    """One recording in progress; `finish()` closes the file and returns the callback parameters."""

    def __init__(self, directory: Path, base_url: str, file_format: str, channels: int) -> None:
        self.id = str(uuid.uuid4())
        self.file_format = file_format
        self.name = f"{self.id}.{file_format}"
        self.path = directory / self.name
        self.url = f"{base_url.rstrip('/')}{RECORDINGS_PATH}{self.name}"
        self.recorder = Recorder(self.path, file_format, channels)
        self.started_ms = int(time.time() * 1000)
        self.params: dict[str, str] | None = None

    def finish(self, digits: str = "") -> dict[str, str]:
        if self.params is not None:
            return self.params
        info = self.recorder.close()
        ended_ms = int(time.time() * 1000)
        duration_ms = int(round(info.duration_s * 1000))
        self.params = {
            "RecordUrl": self.url,
            "RecordFile": self.url,
            "RecordingID": self.id,
            "RecordingFileFormat": self.file_format,
            "RecordingDuration": str(int(round(info.duration_s))),
            "RecordingDurationMs": str(duration_ms),
            "RecordingStartMs": str(self.started_ms),
            "RecordingEndMs": str(ended_ms),
            "Digits": digits,
        }
        return self.params


def recording_file(directory: Path, name: str) -> Path | None:
    """The file for a RecordUrl name, or None (names are exactly '<uuid>.<wav|mp3>': no path tricks)."""
    stem, _, ext = name.partition(".")
    if ext not in ("wav", "mp3"):
        return None
    try:
        uuid.UUID(stem)
    except ValueError:
        return None
    path = directory / name
    return path if path.is_file() else None
