"""The reliability suite (docs/reliability.md): fuzzing, XML/HTTP abuse, network faults, overload, restarts, security.

Every test here is marked `integration` and `reliability`. Quick by default (the whole suite in a few minutes, what CI
runs); `SOFTSWITCH_LONG=1` runs the long variants whose figures docs/reliability.md reports. Each test records its
figures with the `figures` fixture: they are printed at the end of the run and written to
`var/reliability/figures.json` (one object per test, merged across runs).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent / "integration"))  # sipharness, engine_env, rawsip (shared with integration)

FIGURES_FILE = ROOT / "var" / "reliability" / "figures.json"
_collected: dict[str, dict[str, Any]] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict the test fills with its figures (attempted, completed, ...); reported at the end of the run."""
    data: dict[str, Any] = {}
    yield data
    if data:
        from tests.reliability.common import LONG

        data.setdefault("mode", "long" if LONG else "quick")
        data.setdefault("at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        _collected[request.node.nodeid] = data


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _collected:
        return
    terminalreporter.section("reliability figures")
    for nodeid, data in _collected.items():
        shown = ", ".join(f"{k}={v}" for k, v in data.items() if k != "at" and not isinstance(v, dict | list))
        terminalreporter.write_line(f"{nodeid.split('::')[-1]}: {shown}")
    try:
        FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.exists() else {}
        old.update(_collected)
        FIGURES_FILE.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
        terminalreporter.write_line(f"(written to {FIGURES_FILE.relative_to(ROOT)})")
    except OSError as exc:
        terminalreporter.write_line(f"(figures not written: {exc})")
