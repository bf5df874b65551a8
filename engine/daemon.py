"""The softswitch daemon: runs the `Engine` until SIGTERM/SIGINT, then stops it cleanly.

Process lifecycle only: signals, start, drain, stop. Call handling lives in engine.engine and below.
"""

from __future__ import annotations

import asyncio
import signal

import structlog

from .config import Config
from .engine import Engine

log = structlog.get_logger("engine.daemon")


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.engine = Engine(config)
        self._stop = asyncio.Event()

    def request_stop(self, reason: str = "signal") -> None:
        if not self._stop.is_set():
            log.info("softswitch_stopping", reason=reason)
            self._stop.set()

    async def run(self) -> None:
        """Start, wait for SIGTERM/SIGINT (or request_stop), end live calls, close everything."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        bound = await self.engine.start()
        log.info("softswitch_started", sip={t: f"{h}:{p}" for t, (h, p) in bound.items()})
        try:
            await self._stop.wait()
        finally:
            await self.engine.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            log.info("softswitch_stopped")
