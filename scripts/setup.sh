#!/usr/bin/env bash
# First command on a fresh Debian 12 machine: installs everything, then starts the engine.
#
#   bash scripts/setup.sh                      install, then `softswitch serve` on the embedded defaults
#   bash scripts/setup.sh --config FILE        install, then `softswitch serve --config FILE` (args go to serve)
#   bash scripts/setup.sh --no-serve           install only (what .ci/run does)
#
# Installs: apt packages the engine and its tests drive (SIPp, baresip, espeak-ng; python3-venv when missing),
# then softswitch with its test extras, editable, into .venv (scripts/test.sh and .ci/run use the same .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(sip-tester baresip espeak-ng kamailio iptables iproute2)

serve=1
if [ "${1:-}" = "--no-serve" ]; then
  serve=0
  shift
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
if ! command -v python3 >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)  # Debian's python3 ships venv without ensurepip
fi
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "setup: installing apt packages: ${missing[*]}" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

if [ -x .venv/bin/python ] || python3 -m venv .venv; then
  py=.venv/bin/python
else
  echo "setup: cannot create .venv; installing into $(command -v python3)" >&2
  py=python3
fi
"$py" -m pip install -q -e '.[test]'

if [ "$serve" -eq 1 ]; then
  bin=$(dirname "$py")/softswitch
  [ -x "$bin" ] || bin=softswitch
  exec "$bin" serve "$@"
fi
