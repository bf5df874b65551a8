#!/bin/sh
# Kamailio's dispatcher in front of the engines: renders tests/kamailio/{kamailio.cfg,dispatcher.list} (the one source
# of the config) and runs Kamailio in the foreground. The compose `kamailio` service runs it with the defaults below;
# tests/integration/test_kamailio_scale.py runs the same script on loopback ports.
#
#   KAMAILIO_LISTEN     udp:172.28.0.5:5060     where callers reach the dispatcher
#   ENGINE_A, ENGINE_B  172.28.0.21:5080, 172.28.0.22:5080   the engines (dispatcher set 1)
#   KAMAILIO_TEMPLATES  /templates              the folder with kamailio.cfg and dispatcher.list (tests/kamailio)
#   KAMAILIO_RUNDIR     /run/softswitch-kamailio   rendered files, pid file, control socket
#   KAMAILIO_MPATH      (found with dpkg -L kamailio, else under /usr/lib*)   module directory
#   KAMAILIO_CHILDREN   (the template's children=2)   UDP worker processes; with more than one, two replies of one
#                       call read by different workers can leave in the other order (a 180 after its 200)
set -eu
listen=${KAMAILIO_LISTEN:-udp:172.28.0.5:5060}
engine_a=${ENGINE_A:-172.28.0.21:5080}
engine_b=${ENGINE_B:-172.28.0.22:5080}
templates=${KAMAILIO_TEMPLATES:-/templates}
run=${KAMAILIO_RUNDIR:-/run/softswitch-kamailio}
mpath=${KAMAILIO_MPATH:-}
if [ -z "$mpath" ]; then
  so=$(dpkg -L kamailio 2>/dev/null | grep '/dispatcher\.so$' | head -n 1 || true)
  [ -n "$so" ] || so=$(ls /usr/lib/*/kamailio/modules/dispatcher.so /usr/lib*/kamailio/modules/dispatcher.so \
                        /usr/local/lib*/kamailio/modules/dispatcher.so 2>/dev/null | head -n 1 || true)
  [ -n "$so" ] || { echo "run.sh: kamailio's dispatcher.so not found (apt-get install kamailio)" >&2; exit 2; }
  mpath=$(dirname "$so")
fi
mkdir -p "$run"
sed -e "s#@ENGINE_A@#$engine_a#g" -e "s#@ENGINE_B@#$engine_b#g" "$templates/dispatcher.list" > "$run/dispatcher.list"
sed -e "s#@LISTEN@#$listen#g" -e "s#@MPATH@#$mpath#g" -e "s#@RUNDIR@#$run#g" \
    -e "s#@DISPATCHER_LIST@#$run/dispatcher.list#g" "$templates/kamailio.cfg" > "$run/kamailio.cfg"
if [ -n "${KAMAILIO_CHILDREN:-}" ]; then
  sed -i -e "s#^children=.*#children=$KAMAILIO_CHILDREN#" "$run/kamailio.cfg"
fi
if grep -q '@[A-Z_]*@' "$run/kamailio.cfg" "$run/dispatcher.list"; then
  echo "run.sh: unreplaced markers in the rendered config" >&2
  exit 2
fi
exec kamailio -f "$run/kamailio.cfg" -DD -E -Y "$run" -w "$run" -P "$run/kamailio.pid" -m "${KAMAILIO_SHM_MB:-64}" \
     -M "${KAMAILIO_PKG_MB:-8}"
