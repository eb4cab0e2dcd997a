# Shared by deb-in-systemd.sh (amd64, systemd-nspawn) and vm-arm64.sh
# (arm64, qemu-system-aarch64): sourced, not run.

step() { printf '\n==> %s\n' "$*"; }
die() {
	printf 'e2e: %s\n' "$*" >&2
	exit 1
}

# prepare_pkg_dir DEB DIR: the package, a copy with a higher version (for
# the upgrade test), inside.sh and the G-code files; sets VERSION,
# UPGRADE_VERSION and ARCH.
prepare_pkg_dir() {
	local deb=$1 dir=$2 repack
	VERSION=$(dpkg-deb -f "$deb" Version)
	ARCH=$(dpkg-deb -f "$deb" Architecture)
	UPGRADE_VERSION="${VERSION}+e2e1"
	mkdir -p "$dir"
	cp "$deb" "$dir/fileagent_${VERSION}_${ARCH}.deb"
	repack=$(mktemp -d)
	dpkg-deb -R "$deb" "$repack"
	sed -i "s/^Version: .*/Version: $UPGRADE_VERSION/" "$repack/DEBIAN/control"
	dpkg-deb --root-owner-group -Zxz -b "$repack" "$dir/fileagent_${UPGRADE_VERSION}_${ARCH}.deb" >/dev/null
	rm -rf "$repack"
	cp tests/e2e/inside.sh tests/data/tiny.gcode tests/data/cube-20mm.gcode "$dir/"
	printf 'VERSION=%s\nUPGRADE_VERSION=%s\nARCH=%s\n' "$VERSION" "$UPGRADE_VERSION" "$ARCH" >"$dir/versions"
}

# install_test_unit ROOT ACTION: a oneshot unit in ROOT that runs
# /mnt/pkg/inside.sh after boot, then ACTION (exit, poweroff) either way.
install_test_unit() {
	local root=$1 action=$2
	cat >"$root/etc/systemd/system/fileagent-e2e.service" <<UNIT
[Unit]
Description=fileagent end-to-end test of the installed package
After=multi-user.target
SuccessAction=$action
FailureAction=$action
FailureActionExitStatus=1

[Service]
Type=oneshot
ExecStart=/mnt/pkg/inside.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=30min

[Install]
WantedBy=multi-user.target
UNIT
	mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
	ln -sf ../fileagent-e2e.service "$root/etc/systemd/system/multi-user.target.wants/fileagent-e2e.service"
	# What an installed Debian has and debootstrap leaves out.
	[ -s "$root/etc/hosts" ] ||
		printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
}
