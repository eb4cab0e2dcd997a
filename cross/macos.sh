#!/bin/bash
# A type check of the workstation for macOS, on Linux: `cargo check` of the
# library and the binary for aarch64-apple-darwin and x86_64-apple-darwin,
# with Debian's rustc-web and std checked from rust-web-src (-Zbuild-std).
# There is no Apple SDK here, so nothing is linked or run: the build
# scripts' C compiler is a stand-in that writes empty objects
# (cross/macos/cc-stub.sh). What it proves: the workstation side compiles
# against the macOS targets' std, libc and crates (types, APIs, cfgs); not
# that it behaves (see .github/workflows/native.yml for native runs).
#
#   cross/macos.sh [aarch64|x86_64]...   both when none is named
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=$here/target/rustc-web/macos
[ $# -gt 0 ] || set -- aarch64 x86_64
for arch in "$@"; do
	triple=$arch-apple-darwin
	cc_triple=${triple//-/_}
	export "CC_${cc_triple}=$here/cross/macos/cc-stub.sh" "AR_${cc_triple}=$here/cross/macos/ar-stub.sh"
	echo "macos: cargo check --target $triple (types and APIs only, nothing linked)" >&2
	/usr/bin/cargo check --locked --target "$triple" -Zbuild-std=std,panic_abort --lib --bins
done
