#!/bin/bash
# Runs inside the booted test system (a systemd-nspawn container, see
# deb-in-systemd.sh, or an emulated arm64 VM, see vm-arm64.sh): installs
# the package the way users do, and checks what the issue promises of the
# service, the package and its maintainer scripts. Writes /mnt/out/PASS on
# success; on failure, the journal goes to /mnt/out/journal.txt. The last
# line on the console is "FILEAGENT-E2E-RESULT: PASS" or "...: FAIL".
# Without OCTO_VENV (no OctoPrint there), the forwarding step is skipped.
set -euo pipefail
. /mnt/pkg/versions

PKG=/mnt/pkg
OUT=/mnt/out
DEB=$PKG/fileagent_${VERSION}_${ARCH}.deb
UPGRADE=$PKG/fileagent_${UPGRADE_VERSION}_${ARCH}.deb
# The host's apt may delete downloaded archives after each dpkg call; keep
# them in a directory of our own.
APT=(apt-get -y -q -o Dir::Cache::Archives=/var/cache/e2e-archives -o Dpkg::Use-Pty=0)
mkdir -p /var/cache/e2e-archives/partial
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n==> [inside] %s\n' "$*"; }
fail() {
	printf 'FAIL: %s\n' "$*"
	journalctl -u fileagent --no-pager -o short-precise >"$OUT/journal.txt" 2>&1 || true
	systemctl status fileagent --no-pager >>"$OUT/journal.txt" 2>&1 || true
	if [ -n "${CONSOLE_JOURNAL:-}" ]; then
		tail -n 150 "$OUT/journal.txt"
	fi
	echo "FILEAGENT-E2E-RESULT: FAIL"
	exit 1
}
# A file is in the spool: still in ready/, or forwarded and moved to done/.
in_spool() { test -f "/var/spool/fileagent/ready/$1" || test -f "/var/spool/fileagent/done/$1"; }
trap 'fail "line $LINENO: $BASH_COMMAND"' ERR
check() { # check DESCRIPTION COMMAND...
	local what=$1
	shift
	"$@" || fail "$what"
	printf '  ok  %s\n' "$what"
}
# Waits up to $1 seconds for a command to succeed (polling another process
# with a deadline; there is nothing to block on).
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.2
	done
}
prop() { systemctl show -p "$1" --value fileagent; }
journal_has() { journalctl -u fileagent --no-pager -o cat | grep -q -- "$1"; }

step "apt install ./fileagent_${VERSION}_${ARCH}.deb with policy-rc.d forbidding starts"
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
cd "$PKG"
"${APT[@]}" install "./fileagent_${VERSION}_${ARCH}.deb" | tee "$OUT/install.log"
check "postinst prints the next steps" grep -q "sudo fileagent pair" "$OUT/install.log"
check "postinst names the API key file" grep -q "sudoedit /etc/fileagent/octoprint.key" "$OUT/install.log"
check "policy-rc.d respected: not started" test "$(systemctl is-active fileagent)" != active
check "but enabled" test "$(systemctl is-enabled fileagent)" = enabled
rm /usr/sbin/policy-rc.d

step "package contents"
for path in /usr/bin/fileagent /lib/systemd/system/fileagent.service /etc/fileagent/config.toml \
	/usr/share/man/man1/fileagent.1.gz /usr/share/man/man1/fileagent-serve.1.gz \
	/usr/share/bash-completion/completions/fileagent /usr/share/zsh/vendor-completions/_fileagent \
	/usr/share/fish/vendor_completions.d/fileagent.fish /usr/share/doc/fileagent/copyright \
	/usr/share/doc/fileagent/changelog.gz /usr/share/doc/fileagent/README.md.gz; do
	check "$path" test -f "$path"
done
check "config.toml is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' fileagent | grep -q /etc/fileagent/config.toml"
check "man page renders" sh -c "zcat /usr/share/man/man1/fileagent.1.gz | grep -q '^.SH SUBCOMMANDS'"

step "user, directories, modes"
check "system user fileagent" sh -c "getent passwd fileagent | grep -q ':/usr/sbin/nologin$'"
check "/var/lib/fileagent fileagent:fileagent 700" test "$(stat -c '%U:%G %a' /var/lib/fileagent)" = "fileagent:fileagent 700"
check "/var/spool/fileagent fileagent:fileagent 750" test "$(stat -c '%U:%G %a' /var/spool/fileagent)" = "fileagent:fileagent 750"
check "API key file root:fileagent 640" test "$(stat -c '%U:%G %a' /etc/fileagent/octoprint.key)" = "root:fileagent 640"
check "CA key made by postinst, 600" test "$(stat -c '%U %a' /var/lib/fileagent/ca.key)" = "fileagent 600"

step "sudo systemctl start fileagent"
systemctl start fileagent
check "active (Type=notify: only after READY=1)" test "$(systemctl is-active fileagent)" = active
check "Type=notify" test "$(prop Type)" = notify
check "status line says it listens" sh -c "systemctl show -p StatusText --value fileagent | grep -q 'listening on 0.0.0.0:7341'"
check "status line names forwarding state" sh -c "systemctl show -p StatusText --value fileagent | grep -q 'no OctoPrint API key'"
check "watchdog armed" test "$(prop WatchdogUSec)" = 30s
pid=$(prop MainPID)
check "no procps in the root (only what the package declares)" sh -c '! command -v ps && ! test -e /bin/kill'
check "runs as fileagent" test "$(stat -c %U "/proc/$pid")" = fileagent
# Field 19 of /proc/PID/stat, counted after the command name's closing paren.
check "nice 10 (below OctoPrint)" test "$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f17)" = 10
check "best-effort IO priority 7" sh -c "grep -q . /proc/$pid/stat && ionice -p $pid | grep -q 'best-effort: prio 7'"
systemctl status fileagent --no-pager | sed -n 1,12p

step "systemd-analyze security and verify"
exposure=$(systemd-analyze security fileagent.service --no-pager | sed -n 's/.*Overall exposure level for fileagent.service: \([0-9.]*\).*/\1/p')
echo "  exposure $exposure"
check "exposure <= 2.0" awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 2.0) }'
echo "$exposure" >"$OUT/exposure"
systemd-analyze verify fileagent.service >"$OUT/verify.out" 2>"$OUT/verify.err" || fail "systemd-analyze verify failed"
check "systemd-analyze verify prints nothing on stderr" test ! -s "$OUT/verify.err"

step "pair a workstation with a one-time code and send a file"
export HOME=/root
fileagent pair >"$OUT/pair-agent.out" 2>&1 &
pair_pid=$!
check "the agent prints a pairing code" wait_for 20 grep -q '^pairing code' "$OUT/pair-agent.out"
code=$(sed -n 's/^pairing code *//p' "$OUT/pair-agent.out")
fileagent pair localhost "$code" --name pi --as e2e-laptop
wait "$pair_pid" || fail "fileagent pair on the agent failed: $(cat "$OUT/pair-agent.out")"
check "the agent's pair command reports it" grep -q 'paired "e2e-laptop"' "$OUT/pair-agent.out"
check "identity file 600" test "$(stat -c %a /root/.config/fileagent/pi.pem)" = 600
check "state belongs to the service user" sh -c "test -z \"\$(find /var/lib/fileagent ! -user fileagent)\""
check "journal: the pairing and its outcome" sh -c "journalctl -u fileagent -o cat | grep -q 'paired a new client'"
agent=(--agent pi)
fileagent send "$PKG/tiny.gcode" "${agent[@]}"
sum=$(sha256sum "$PKG/tiny.gcode" | cut -d' ' -f1)
check "file in the spool, intact" test "$(sha256sum /var/spool/fileagent/ready/tiny.gcode | cut -d' ' -f1)" = "$sum"
check "list shows it" sh -c "fileagent list --agent pi | grep -q tiny.gcode"
check "journal fields FILE_NAME, CLIENT_CN, SHA256, BYTES" sh -c \
	"journalctl -u fileagent FILE_NAME=tiny.gcode CLIENT_CN=e2e-laptop SHA256=$sum BYTES=$(stat -c %s "$PKG/tiny.gcode") -o cat | grep -q stored"

check "connection span field PEER" sh -c "journalctl -u fileagent CLIENT_CN=e2e-laptop -o json | grep -q '\"PEER\":\"127.0.0.1:'"

step "revoke a client: refused at once by the running service, others keep working"
fileagent client issue e2e-other --out /root/other.pem >/dev/null
fileagent ping --agent localhost --identity /root/other.pem
fileagent client revoke e2e-other
if fileagent ping --agent localhost --identity /root/other.pem >"$OUT/revoked.err" 2>&1; then
	fail "a revoked client was served"
fi
check "the revoked client is told so" grep -q revoked "$OUT/revoked.err"
check "journal: the refusal" sh -c "journalctl -u fileagent -o cat | grep -q 'refused a revoked client certificate'"
check "the paired client still works" fileagent ping "${agent[@]}"
check "client list shows both states" sh -c "fileagent client list | grep -q 'e2e-other .*revoked' && fileagent client list | grep -q 'e2e-laptop .*valid'"

if [ -n "${OCTO_VENV:-}" ]; then
	step "forwarding to a real OctoPrint in here: API key in place, reload"
	systemd-run --unit=octoprint --quiet "$OCTO_VENV/bin/octoprint" --basedir "$OCTO_BASE" \
		serve --host 127.0.0.1 --port 5000 --iknowwhatimdoing
	# What sudoedit does: new contents, the package's owner and mode kept.
	printf '%s\n' "$OCTO_KEY" >/etc/fileagent/octoprint.key
	systemctl reload fileagent
	check "the agent sees OctoPrint's printer" wait_for 120 sh -c \
		"fileagent status ${agent[*]} | grep -Eq '^printer +(Operational|Printing)'"
	check "the file sent while forwarding was off is uploaded, not started" wait_for 60 sh -c \
		"fileagent list ${agent[*]} | grep -Eq '^tiny.gcode .*uploaded .*forwarding was off'"
	check "journal: uploaded to OctoPrint" sh -c \
		"journalctl -u fileagent FILE_NAME=tiny.gcode -o cat | grep -q 'uploaded to OctoPrint'"
	check "journal: the backlog counted" sh -c \
		"journalctl -u fileagent -o cat | grep -q 'files from before forwarding ran'"
	check "a person starts it: fileagent print" fileagent print tiny.gcode "${agent[@]}"
	check "it prints" wait_for 60 sh -c \
		"fileagent list ${agent[*]} | grep -Eq '^tiny.gcode .*(printing|printed)'"
	check "spool copy moved to done/" test -f /var/spool/fileagent/done/tiny.gcode
	fileagent status "${agent[@]}"
else
	step "forwarding: skipped (${OCTO_SKIPPED:-no OctoPrint here})"
fi

step "systemctl reload: new config applies, invalid config is refused"
cp /etc/fileagent/config.toml /root/config.orig
sed -i 's/^max_file_size = .*/max_file_size = "100 KiB"/' /etc/fileagent/config.toml
systemctl reload fileagent
check "same process after reload" test "$(prop MainPID)" = "$pid"
check "reload logged" wait_for 10 journal_has "reloaded: new connections use the new config"
if fileagent send "$PKG/cube-20mm.gcode" --agent pi 2>"$OUT/too-large.err"; then
	fail "a file over the reloaded max_file_size was accepted"
fi
check "new limit in force" grep -q "over this agent's max_file_size of 102400 bytes" "$OUT/too-large.err"
check "said once" test "$(wc -l <"$OUT/too-large.err")" = 1
echo 'max_file_size = "lots"' >>/etc/fileagent/config.toml
systemctl reload fileagent
check "invalid config refused, logged" wait_for 10 journal_has "reload refused, the old config stays in force"
check "still active" test "$(systemctl is-active fileagent)" = active
fileagent ping --agent pi
cp /root/config.orig /etc/fileagent/config.toml
# A local edit of the conffile, to be kept across the upgrade.
sed -i 's/^max_connections = 64/max_connections = 32/' /etc/fileagent/config.toml
systemctl reload fileagent
fileagent send "$PKG/cube-20mm.gcode" --agent pi
check "old limit back" sh -c "fileagent list ${agent[*]} | grep -q '^cube-20mm.gcode '"

step "watchdog: a stopped main process is killed and restarted"
mkdir -p /run/systemd/system/fileagent.service.d
printf '[Service]\nWatchdogSec=3s\n' >/run/systemd/system/fileagent.service.d/e2e-watchdog.conf
systemctl daemon-reload
systemctl restart fileagent
pid=$(prop MainPID)
restarts=$(prop NRestarts)
kill -STOP "$pid"
check "restarted with a new process" wait_for 60 sh -c \
	"[ \"\$(systemctl show -p MainPID --value fileagent)\" != $pid ] && [ \"\$(systemctl is-active fileagent)\" = active ]"
check "NRestarts went up" test "$(prop NRestarts)" -gt "$restarts"
check "journal says watchdog" sh -c "journalctl -u fileagent --no-pager | grep -qi 'watchdog timeout'"
rm /run/systemd/system/fileagent.service.d/e2e-watchdog.conf
systemctl daemon-reload
systemctl restart fileagent

step "upgrade to $UPGRADE_VERSION keeps keys, spool and config, restarts the service"
ca_before=$(sha256sum /var/lib/fileagent/ca.key /var/lib/fileagent/ca.crt /var/lib/fileagent/server.key)
pid=$(prop MainPID)
"${APT[@]}" -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
	install "./fileagent_${UPGRADE_VERSION}_${ARCH}.deb" | tee "$OUT/upgrade.log"
check "version $UPGRADE_VERSION installed" test "$(dpkg-query -W -f='${Version}' fileagent)" = "$UPGRADE_VERSION"
check "keys unchanged" test "$(sha256sum /var/lib/fileagent/ca.key /var/lib/fileagent/ca.crt /var/lib/fileagent/server.key)" = "$ca_before"
check "spool kept" in_spool tiny.gcode
if [ -n "${OCTO_VENV:-}" ]; then
	check "forwarding queue kept" grep -q tiny.gcode /var/spool/fileagent/queue.json
fi
check "local conffile edit kept" grep -q '^max_connections = 32' /etc/fileagent/config.toml
check "service restarted" wait_for 30 sh -c "[ \"\$(systemctl show -p MainPID --value fileagent)\" != $pid ] && [ \"\$(systemctl is-active fileagent)\" = active ]"
fileagent send "$PKG/tiny.gcode" --as after-upgrade.gcode --agent pi
check "old identity still works" sh -c "fileagent list ${agent[*]} | grep -q '^after-upgrade.gcode '"

step "apt remove keeps state, apt purge removes everything"
journalctl -u fileagent --no-pager -o short-precise >"$OUT/journal.txt"
"${APT[@]}" remove fileagent
check "stopped" test "$(systemctl is-active fileagent)" != active
check "keys kept" test -f /var/lib/fileagent/ca.key
check "spool kept" in_spool tiny.gcode
check "config kept" test -f /etc/fileagent/config.toml
check "user kept" getent passwd fileagent
"${APT[@]}" purge fileagent
for path in /var/lib/fileagent /var/spool/fileagent /etc/fileagent /lib/systemd/system/fileagent.service; do
	check "$path gone" test ! -e "$path"
done
check "user gone" sh -c "! getent passwd fileagent"
check "group gone" sh -c "! getent group fileagent"

echo "package $VERSION -> $UPGRADE_VERSION ($ARCH), exposure $exposure" >"$OUT/PASS"
step "all checks passed"
echo "FILEAGENT-E2E-RESULT: PASS $(cat "$OUT/PASS")"
