#!/bin/bash
# The arm64 package under a real systemd on an emulated arm64 machine
# (`just vm-test-arm64`; root). Not part of every CI run: the first run
# builds the guest's root (about 20 minutes of emulation), later runs reuse
# it and take a few minutes.
#
#   1. builds target/debian/fileagent_<version>_arm64.deb (cross/setup-debian.sh first);
#   2. creates a Debian bookworm arm64 root with its kernel (linux-image-arm64):
#      `debootstrap --foreign`, then the second stage in a chroot, which runs
#      arm64 programs through qemu-aarch64-static registered in binfmt_misc
#      (this script mounts binfmt_misc and registers it if needed). Cached
#      in $FILEAGENT_E2E_CACHE (default /var/cache/fileagent-e2e);
#   3. makes an ext4 disk image of that root plus the packages and
#      tests/e2e/inside.sh (`mkfs.ext4 -d`), and boots it with
#      `qemu-system-aarch64 -machine virt -cpu max -accel tcg`, the root's
#      own kernel and initrd, `snapshot=on`, and no network;
#   4. a oneshot unit runs inside.sh (the same checks as the amd64 test,
#      without OctoPrint: the host's Python venv is x86_64) and powers off;
#      the result is read from the serial console.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/e2e/lib.sh

CACHE=${FILEAGENT_E2E_CACHE:-/var/cache/fileagent-e2e}
MIRROR=${FILEAGENT_E2E_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
INCLUDE=systemd,systemd-sysv,dbus,adduser,procps,man-db,linux-image-arm64,initramfs-tools
ROOT=$CACHE/$SUITE-arm64-$(printf '%s' "$INCLUDE" | sha256sum | cut -c1-12)
WORK=target/e2e-arm64
QEMU_USER=/usr/bin/qemu-aarch64-static
BINFMT=/proc/sys/fs/binfmt_misc

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mkfs)"
for tool in debootstrap qemu-system-aarch64 "$QEMU_USER" mkfs.ext4 lintian; do
	command -v "$tool" >/dev/null ||
		die "$tool is missing: apt-get install debootstrap qemu-system-arm qemu-user-static e2fsprogs lintian"
done

step "build the arm64 .deb"
deb=$(scripts/build-deb.sh arm64 | tail -n 1)
printf '%s: %s bytes\n' "$deb" "$(stat -c %s "$deb")"
lintian --fail-on error,warning "$deb"
rm -rf "$WORK" && mkdir -p "$WORK"
prepare_pkg_dir "$deb" "$WORK/pkg"
printf 'OCTO_SKIPPED=%q\nCONSOLE_JOURNAL=1\n' \
	"no OctoPrint in the arm64 VM: the host's venv is x86_64; forwarding is covered on amd64" >>"$WORK/pkg/versions"

if [ ! -x "$ROOT/usr/lib/systemd/systemd" ]; then
	step "build the arm64 root $ROOT (once; about 20 minutes)"
	if [ ! -e "$BINFMT/register" ]; then
		mount -t binfmt_misc binfmt_misc "$BINFMT"
	fi
	if [ ! -e "$BINFMT/fileagent-qemu-aarch64" ] && ! grep -qs "interpreter $QEMU_USER" "$BINFMT"/qemu-aarch64; then
		# F: the interpreter is opened now, so it works inside the chroot.
		printf '%s' ":fileagent-qemu-aarch64:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:$QEMU_USER:F" >"$BINFMT/register"
	fi
	rm -rf "$ROOT.tmp"
	mkdir -p "$CACHE"
	debootstrap --arch=arm64 --foreign --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT.tmp" "$MIRROR"
	chroot "$ROOT.tmp" /debootstrap/debootstrap --second-stage
	mv "$ROOT.tmp" "$ROOT"
else
	step "reuse the cached arm64 root $ROOT"
fi

step "disk image: the root, the packages, the test unit"
stage=$WORK/stage
mkdir -p "$stage"
cp -a "$ROOT/." "$stage/"
mkdir -p "$stage/mnt/pkg" "$stage/mnt/out"
cp -a "$WORK/pkg/." "$stage/mnt/pkg/"
install_test_unit "$stage" poweroff
echo "fileagent-arm64" >"$stage/etc/hostname"
# Quiet, quick boot: no login prompt on the serial console.
ln -sf /dev/null "$stage/etc/systemd/system/serial-getty@ttyAMA0.service"
kernel=$(ls "$ROOT"/boot/vmlinuz-* | sort -V | tail -n 1)
initrd=$(ls "$ROOT"/boot/initrd.img-* | sort -V | tail -n 1)
mkfs.ext4 -q -F -L fileagent-root -d "$stage" "$WORK/disk.img" 3G
rm -rf "$stage"

step "boot qemu-system-aarch64 (TCG) and run tests/e2e/inside.sh"
started=$SECONDS
timeout 40m qemu-system-aarch64 -machine virt -cpu max -accel tcg -smp 2 -m 1536 \
	-kernel "$kernel" -initrd "$initrd" \
	-append "root=/dev/vda rw console=ttyAMA0 panic=-1" \
	-drive "file=$WORK/disk.img,format=raw,if=virtio,snapshot=on" \
	-nic none -nographic -no-reboot -serial mon:stdio </dev/null | tee "$WORK/console.log" || true
result=$(tr -d '\r' <"$WORK/console.log" | grep -a 'FILEAGENT-E2E-RESULT: ' | tail -n 1 || true)
printf '\nboot and checks took %d s\n' $((SECONDS - started))
case $result in
*"RESULT: PASS"*) step "PASS: ${result#*PASS }" ;;
*)
	step "FAILED: ${result:-no result on the console} (see $WORK/console.log)"
	exit 1
	;;
esac
