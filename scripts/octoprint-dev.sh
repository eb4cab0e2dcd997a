#!/usr/bin/env bash
# A real OctoPrint with its bundled Virtual Printer, for tests and local
# development, installed and configured without any interaction.
#
#   scripts/octoprint-dev.sh install                  venv with OctoPrint (cached)
#   scripts/octoprint-dev.sh prepare BASEDIR APIKEY   private basedir: config, admin user, API key
#   scripts/octoprint-dev.sh serve BASEDIR PORT       run it on 127.0.0.1:PORT (foreground)
#   scripts/octoprint-dev.sh run [PORT]               all three, wait until Operational, stay up
#   scripts/octoprint-dev.sh clients                  venv with OctoPrint client programs others
#                                                     wrote (octoprint-cli, octorest, PrusaLinkPy)
#
# Nothing is fetched from the network at run time: the first-run wizard,
# online checks, update checks, tracking, announcements and plugin-repository
# lookups are all disabled. The venv lives under target/ (override with
# FILEAGENT_OCTOPRINT_VENV); the version is pinned below.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=${FILEAGENT_OCTOPRINT_VERSION:-1.11.8}
venv=${FILEAGENT_OCTOPRINT_VENV:-$here/target/octoprint/venv}
octoprint=$venv/bin/octoprint

install() {
  if [ -x "$octoprint" ] && "$octoprint" --version 2> /dev/null | grep -q "version $version\$"; then
    return 0
  fi
  echo "installing OctoPrint $version into $venv" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "OctoPrint==$version"
  "$octoprint" --version >&2
}

# The client programs the bridge's tests drive, pinned, in a venv of their
# own (their dependencies need not agree with OctoPrint's).
clients_venv=${FILEAGENT_CLIENTS_VENV:-$here/target/octoprint/clients}
# selenium drives Debian's chromium (through chromium-driver) in the web page's tests.
clients_pins="octoprint-cli==3.3.2.post1 octorest==0.4 PrusaLinkPy==2.2.1 selenium==4.51.0"

clients() {
  local stamp=$clients_venv/.pins
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$clients_pins" ]; then
    return 0
  fi
  echo "installing $clients_pins into $clients_venv" >&2
  rm -rf "$clients_venv"
  mkdir -p "$(dirname "$clients_venv")"
  python3 -m venv "$clients_venv"
  # shellcheck disable=SC2086 # the pins are words
  "$clients_venv/bin/pip" install --quiet --disable-pip-version-check $clients_pins
  echo "$clients_pins" > "$stamp"
}

prepare() {
  local base=$1 key=$2
  install
  mkdir -p "$base"
  cat > "$base/config.yaml" <<YAML
server:
  firstRun: false
  onlineCheck:
    enabled: false
  pluginBlacklist:
    enabled: false
  pythonEolCheck:
    enabled: false
  seenWizards:
    corewizard: 4
    backup: null
    tracking: null
  uploads:
    # Room for the 1 GiB benchmark upload (benches/all.sh); the default is 1 GB.
    maxSize: 17179869184
  commands:
    serverRestartCommand: ''
    systemRestartCommand: ''
    systemShutdownCommand: ''
serial:
  port: VIRTUAL
  baudrate: 115200
  autoconnect: true
plugins:
  _disabled:
    - announcements
    - tracking
    - softwareupdate
    - pluginmanager
    - errortracking
    - discovery
    - health_check
  virtual_printer:
    enabled: true
    # Print fast: the virtual printer answers each move at once.
    okAfterResend: true
    simulateReset: false
    sendWait: false
YAML
  if [ ! -f "$base/users.yaml" ]; then
    "$octoprint" --basedir "$base" user add fileagent --password "fileagent-dev" --admin > /dev/null 2>&1
  fi
  # The API key of that user; set while the server is stopped.
  "$venv/bin/python" - "$base/users.yaml" "$key" <<'PY'
import sys, yaml
path, key = sys.argv[1], sys.argv[2]
with open(path) as f:
    users = yaml.safe_load(f)
users["fileagent"]["apikey"] = key
with open(path, "w") as f:
    yaml.safe_dump(users, f)
PY
}

serve() {
  local base=$1 port=$2
  local extra=()
  [ "$(id -u)" -eq 0 ] && extra+=(--iknowwhatimdoing)
  exec "$octoprint" --basedir "$base" serve --host 127.0.0.1 --port "$port" "${extra[@]}"
}

run() {
  local port=${1:-5000} base key
  base=$(mktemp -d "${TMPDIR:-/tmp}/octoprint-dev.XXXXXX")
  key=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  prepare "$base" "$key"
  serve "$base" "$port" > "$base/serve.log" 2>&1 &
  local pid=$!
  trap 'kill $pid 2> /dev/null; rm -rf "$base"' EXIT
  for _ in $(seq 120); do
    if curl -fsS -H "X-Api-Key: $key" "http://127.0.0.1:$port/api/connection" 2> /dev/null | grep -q '"Operational"'; then
      echo "OctoPrint on http://127.0.0.1:$port, API key $key, basedir $base (Ctrl-C stops it)"
      wait $pid
      return
    fi
    sleep 0.5
  done
  echo "OctoPrint did not become Operational; log:" >&2
  cat "$base/serve.log" >&2
  exit 1
}

case "${1:-}" in
  install) install ;;
  prepare) prepare "$2" "$3" ;;
  serve) serve "$2" "$3" ;;
  run) shift; run "$@" ;;
  clients) clients ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
