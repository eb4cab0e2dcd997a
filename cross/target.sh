#!/bin/sh
# The one table of Raspberry Pi targets, for cross/cargo.sh, debian/rules
# and .ci/run:  cross/target.sh arm64|armhf triple|gnu|runner|dir
#   triple  Rust target           gnu  GNU triple (cross gcc, /usr/<gnu>)
#   runner  qemu-user command that runs the target's binaries here
#   dir     cargo's target dir for it, relative to the source tree: one per
#           target, since their builds may differ in environment (armhf's
#           -Zbuild-std fallback sets RUSTC_BOOTSTRAP, which build scripts
#           watch), and a shared one would rebuild the host crates each time
#           the other target is built
set -eu
case ${1:-} in
arm64 | aarch64) arch=arm64 triple=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu qemu=qemu-aarch64-static ;;
armhf | armv7) arch=armhf triple=armv7-unknown-linux-gnueabihf gnu=arm-linux-gnueabihf qemu=qemu-arm-static ;;
*)
	echo "cross: unknown target ${1:-(none)}: use arm64 or armhf" >&2
	exit 2
	;;
esac
case ${2:-} in
triple) echo "$triple" ;;
gnu) echo "$gnu" ;;
runner) echo "$qemu -L /usr/$gnu" ;;
dir) echo "target/rustc-web/$arch" ;;
*)
	echo "usage: cross/target.sh arm64|armhf triple|gnu|runner|dir" >&2
	exit 2
	;;
esac
