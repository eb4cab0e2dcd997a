#!/bin/bash
# End-to-end test of the Debian package under a real systemd (`just e2e-deb`,
# run by .ci/run). Needs root, debootstrap, systemd-container, debhelper and
# lintian (.ci/run installs them).
#
#   1. builds target/debian/fileagent_<version>_<arch>.deb and a copy with a
#      higher version (for the upgrade), and runs lintian on it;
#   2. creates a minimal Debian bookworm root with debootstrap, cached in
#      $FILEAGENT_E2E_CACHE (default /var/cache/fileagent-e2e);
#   3. boots it with `systemd-nspawn -b` (systemd as PID 1, no network, a
#      throw-away overlay over the cached root), where a oneshot unit runs
#      tests/e2e/inside.sh and carries its result out as the exit status;
#      OctoPrint (scripts/octoprint-dev.sh, the host's venv bound in
#      read-only) runs in there too, so forwarding is tested in the sandbox.
#
# Every step is printed; a failure prints the agent's journal and exits 1.
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE=${FILEAGENT_E2E_CACHE:-/var/cache/fileagent-e2e}
MIRROR=${FILEAGENT_E2E_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# The root holds only what the package declares (adduser; libc and the rest
# of a minbase system are Essential) and what the harness itself needs:
# systemd, systemd-sysv and dbus to boot it and run the service; man-db,
# because `systemd-analyze verify` checks the unit's Documentation= pages;
# and for the OctoPrint the test forwards to, which runs from the host's
# venv, bound in: python3 serves a venv made from Debian's python3 (same
# release as the container), the libraries a Python built elsewhere (pyenv,
# bound in as well). No procps: the unit must not need /bin/kill or ps.
INCLUDE=systemd,systemd-sysv,dbus,adduser,man-db,python3,libssl3,libffi8,libsqlite3-0,libbz2-1.0
ROOT=$CACHE/$SUITE-$(printf '%s' "$INCLUDE" | sha256sum | cut -c1-12)
WORK=target/e2e

. tests/e2e/lib.sh

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, systemd-nspawn)"
for tool in debootstrap systemd-nspawn lintian dh; do
	command -v "$tool" >/dev/null ||
		die "$tool is missing: apt-get install debootstrap systemd-container lintian debhelper"
done

step "build the .deb"
deb=$(scripts/build-deb.sh | tail -n 1)
printf '%s: %s bytes, version %s\n' "$deb" "$(stat -c %s "$deb")" "$(dpkg-deb -f "$deb" Version)"

step "lintian (errors and warnings fail)"
lintian --fail-on error,warning --info "$deb"

step "unit file checks on the host"
systemd-analyze security --offline=true --threshold=20 systemd/fileagent.service |
	tail -n 1

step "a higher version for the upgrade test"
rm -rf "$WORK" && mkdir -p "$WORK/out" "$WORK/octoprint"
prepare_pkg_dir "$deb" "$WORK/pkg"

step "OctoPrint for the container (the host's venv and Python, bound in read-only)"
scripts/octoprint-dev.sh install
venv=$PWD/target/octoprint/venv
python_prefix=$(dirname "$(dirname "$(readlink -f "$venv/bin/python3")")")
binds=(--bind-ro="$venv")
case $python_prefix in
/usr | /usr/*) ;; # Debian's python3, installed in the container too
*) binds+=(--bind-ro="$python_prefix") ;;
esac
octo_key=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
scripts/octoprint-dev.sh prepare "$PWD/$WORK/octoprint" "$octo_key"
printf 'OCTO_VENV=%s\nOCTO_BASE=/mnt/octoprint\nOCTO_KEY=%s\n' "$venv" "$octo_key" >>"$WORK/pkg/versions"

if [ ! -x "$ROOT/usr/lib/systemd/systemd" ]; then
	step "debootstrap $SUITE into $ROOT (once; cached for later runs)"
	rm -rf "$ROOT.tmp"
	mkdir -p "$CACHE"
	debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT.tmp" "$MIRROR"
	mv "$ROOT.tmp" "$ROOT"
else
	step "reuse the cached $SUITE root $ROOT"
fi

# The test unit lives in the cached root (the boot itself only writes to a
# throw-away overlay).
install_test_unit "$ROOT" exit

step "boot the root with systemd-nspawn -b and run tests/e2e/inside.sh in it"
status=0
timeout 20m systemd-nspawn -q -D "$ROOT" --volatile=overlay -b --private-network \
	--register=no --keep-unit --machine=fileagent-e2e \
	--bind-ro="$PWD/$WORK/pkg:/mnt/pkg" --bind="$PWD/$WORK/out:/mnt/out" \
	--bind="$PWD/$WORK/octoprint:/mnt/octoprint" "${binds[@]}" ||
	status=$?
if [ "$status" != 0 ] || [ ! -f "$WORK/out/PASS" ]; then
	printf '\n==> FAILED (container exit status %s)\n' "$status"
	if [ -f "$WORK/out/journal.txt" ]; then
		echo "--- journalctl -u fileagent (last 200 lines) ---"
		tail -n 200 "$WORK/out/journal.txt"
	fi
	exit 1
fi
step "PASS: $(cat "$WORK/out/PASS")"
