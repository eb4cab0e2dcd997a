#!/bin/bash
# The workstation for Windows, from Debian packages only (the rustup dist
# server is not needed): Debian's rustc-web with std built from
# rust-web-src (-Zbuild-std, RUSTC_BOOTSTRAP), mingw-w64 as linker and C
# compiler (ring, zstd-sys), and wine to run the result here.
#
#   cross/windows.sh setup          the packages, and the test wine prefix
#   cross/windows.sh build [ARGS]   build fileagent.exe (ARGS: e.g. --release)
#   cross/windows.sh exe [--release]   the path of the built fileagent.exe
#   cross/windows.sh test [FILTERS] the workstation tests with fileagent.exe
#                                   under wine against the native agent
#
# Output: target/rustc-web/windows/x86_64-pc-windows-gnu/{debug,release}/.
# The wine prefix is target/rustc-web/windows/wine. Wine 8.0 (bookworm)
# lacks bcryptprimitives.dll, which Rust's std loads before main (without
# it the exe exits silently with code 53): a stand-in built here from
# cross/windows/bcryptprimitives.c goes into that prefix. It is a test
# fixture, never shipped.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
triple=x86_64-pc-windows-gnu
target_dir=$here/target/rustc-web/windows
export WINEPREFIX=$target_dir/wine WINEDEBUG=-all WINEDLLOVERRIDES="winemenubuilder.exe=d"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
say() { printf 'windows: %s\n' "$*" >&2; }

setup() {
	local packages=(rustc-web cargo-web rust-web-src gcc-mingw-w64-x86-64 wine wine64)
	local missing=() p
	for p in "${packages[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		say "installing ${missing[*]}"
		$sudo apt-get update -q || say "apt-get update reported errors; installing from the lists there are"
		$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
	fi
	mkdir -p "$target_dir"
	local dll=$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll
	if [ ! -f "$dll" ]; then
		say "creating the wine prefix $WINEPREFIX"
		wine cmd /c exit > /dev/null 2>&1 < /dev/null || true
		x86_64-w64-mingw32-gcc -O2 -shared -s -o "$dll" "$here/cross/windows/bcryptprimitives.c" -ladvapi32
		wineserver -w
	fi
}

build() {
	export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
	export CARGO_TARGET_DIR=$target_dir
	export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
	export CC_x86_64_pc_windows_gnu=x86_64-w64-mingw32-gcc AR_x86_64_pc_windows_gnu=x86_64-w64-mingw32-ar
	/usr/bin/cargo build --target "$triple" -Zbuild-std=std,panic_abort --bin fileagent "$@"
}

exe() {
	local profile=debug
	[ "${1:-}" = --release ] && profile=release
	echo "$target_dir/$triple/$profile/fileagent.exe"
}

# The tests that run workstation commands (pair, send with progress,
# resume after a cut and Ctrl-C, get, delete, list, status, ping, the
# bridge under load, `fileagent ui` starting or asking a running one): the
# suite is built natively and starts the agent natively; Home::cmd runs the
# workstation's commands through FILEAGENT_WORKSTATION_RUNNER.
test_under_wine() {
	local bin
	bin=$(exe)
	[ -x "$bin" ] || {
		say "$bin missing: run cross/windows.sh build first"
		exit 2
	}
	[ $# -gt 0 ] || set -- cli:: pairing:: resume:: progress:: bridge_load:: page::fileagent_ui
	# One wineserver for the whole run, with wine's own services started
	# here: started by a test's first command, they would inherit its pipes
	# and keep the test waiting for their end.
	setsid wineserver -p > /dev/null 2>&1 < /dev/null &
	wine cmd /c exit > /dev/null 2>&1 < /dev/null
	local status=0
	FILEAGENT_WORKSTATION_BIN=$bin FILEAGENT_WORKSTATION_RUNNER=wine \
		cargo test --locked --test it -- "$@" || status=$?
	wineserver -k || true
	return $status
}

case ${1:-} in
setup) setup ;;
build) shift && build "$@" ;;
exe) shift && exe "$@" ;;
test) shift && test_under_wine "$@" ;;
*)
	sed -n '2,13p' "$0" >&2
	exit 2
	;;
esac
