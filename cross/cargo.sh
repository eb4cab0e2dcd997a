#!/bin/bash
# Runs Debian's cargo-web for a Raspberry Pi target, set up by
# cross/setup-debian.sh:
#
#   cross/cargo.sh arm64 build --profile pi --no-default-features --locked --bin fileagent
#   cross/cargo.sh armhf test --locked
#
# TARGET is arm64 (aarch64-unknown-linux-gnu, 64-bit Raspberry Pi OS) or
# armhf (armv7-unknown-linux-gnueabihf, 32-bit). It names /usr/bin/rustc
# explicitly (rustup's 1.95 comes first in PATH and has no arm std), the
# Debian cross gcc as linker and C compiler (ring), the std sysroot or
# -Zbuild-std fallback that setup chose, and qemu-user as the runner, so
# `test` and `run` execute the arm binaries here. Tests that start the
# binary themselves get the runner through FILEAGENT_TEST_RUNNER.
# Output goes to target/rustc-web/<arm64|armhf>/<triple>/ (cross/target.sh dir).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${FILEAGENT_CROSS_DIR:-$here/target/cross}
[ $# -ge 2 ] || {
	echo "usage: cross/cargo.sh arm64|armhf CARGO-ARGS..." >&2
	exit 2
}
triple=$("$here/cross/target.sh" "$1" triple)
gnu=$("$here/cross/target.sh" "$1" gnu)
runner=$("$here/cross/target.sh" "$1" runner)
target_dir=$here/$("$here/cross/target.sh" "$1" dir)
shift
mode_file=$dir/$triple.mode
[ -f "$mode_file" ] || {
	echo "cross: $mode_file missing: run cross/setup-debian.sh first" >&2
	exit 2
}
read -r mode sysroot <"$mode_file"
env_triple=$(echo "$triple" | tr 'a-z-' 'A-Z_')
cc_triple=${triple//-/_}

export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_DIR=$target_dir
export "CARGO_TARGET_${env_triple}_LINKER=$gnu-gcc"
export "CARGO_TARGET_${env_triple}_RUNNER=$runner"
export "CC_${cc_triple}=$gnu-gcc" "AR_${cc_triple}=$gnu-ar"
export FILEAGENT_TEST_RUNNER="$runner"
extra=()
case $mode in
sysroot)
	export "CARGO_TARGET_${env_triple}_RUSTFLAGS=--sysroot $sysroot"
	# Doctests are compiled for the target too (rustdoc has no per-target flags).
	export RUSTDOCFLAGS="--sysroot $sysroot ${RUSTDOCFLAGS:-}"
	;;
build-std)
	echo "cross: $triple: std is built from rust-web-src (-Zbuild-std), the packaged one does not match rustc-web" >&2
	export RUSTC_BOOTSTRAP=1
	extra=(-Zbuild-std=std,panic_abort)
	;;
*)
	echo "cross: unknown mode in $mode_file: $mode" >&2
	exit 2
	;;
esac
command=$1
shift
exec /usr/bin/cargo "$command" --target "$triple" "${extra[@]}" "$@"
