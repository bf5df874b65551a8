#!/usr/bin/env bash
# Runs the whole test suite: `bash scripts/test.sh [PYTEST ARGS...]` (e.g. `-m "not integration"`, a file, `-k`).
# Uses the interpreter scripts/setup.sh installed into (.venv), else python3. Exits with pytest's code: any failure,
# error or "no tests collected" (5) fails the run.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi

"$py" -m pytest -q "$@"
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "scripts/test.sh: pytest exited with code $rc" >&2
fi
exit "$rc"
