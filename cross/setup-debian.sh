#!/bin/bash
# Prepares a Debian/Ubuntu x86_64 host (no Docker) to build fileagent for
# the Raspberry Pi and run its tests under emulation:
#
#   - Debian's rustc-web/cargo-web (bookworm-security), whose version is
#     the one the target std below is built for;
#   - the cross linkers gcc-aarch64-linux-gnu and gcc-arm-linux-gnueabihf
#     (with the targets' libc6-dev, from the same packages' dependencies);
#   - qemu-user-static, to run arm binaries through cargo's runner;
#   - the target std: libstd-rust-web-dev:arm64 / :armhf, downloaded (not
#     installed) and unpacked into a private sysroot under
#     $FILEAGENT_CROSS_DIR (default target/cross). Its version must equal
#     rustc-web's. If a foreign package index is broken or stale, the
#     fallback builds std from rust-web-src with -Zbuild-std (about a
#     minute more per target), and says so.
#
# Prints, per target, the sysroot or "build-std" into
# $FILEAGENT_CROSS_DIR/<triple>.mode for scripts/cross.sh. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${FILEAGENT_CROSS_DIR:-$here/target/cross}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_get() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0 "$@"; }
say() { printf 'cross: %s\n' "$*" >&2; }

packages=(rustc-web cargo-web rust-web-src gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf
	libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user-static file)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	say "installing ${missing[*]}"
	apt_get update || say "apt-get update failed (continuing with the indexes there are)"
	apt_get install --no-install-recommends "${missing[@]}"
fi
rustc_version=$(/usr/bin/rustc --version | awk '{print $2}')
deb_version=$(dpkg-query -W -f='${Version}' rustc-web)
say "rustc-web $rustc_version ($deb_version)"

# std for one target: from the Debian package if its version matches,
# else build-std.
std_for() { # std_for DEB_ARCH TRIPLE
	local arch=$1 triple=$2 sysroot=$dir/sysroot-$1 got
	mkdir -p "$dir"
	if [ -f "$sysroot/.version" ] && [ "$(cat "$sysroot/.version")" = "$deb_version" ]; then
		echo "sysroot $(cat "$sysroot/.root")" >"$dir/$triple.mode"
		return
	fi
	if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
		$sudo dpkg --add-architecture "$arch"
	fi
	# A stale index of one architecture must not stop the others.
	if ! apt_get update >/dev/null 2>"$dir/apt-update-$arch.log"; then
		say "apt-get update reported errors for some index (see $dir/apt-update-$arch.log)"
	fi
	got=$(apt-cache policy "libstd-rust-web-dev:$arch" 2>/dev/null | awk '/Candidate:/ {print $2}')
	if [ "$got" = "$deb_version" ]; then
		rm -rf "$sysroot" "$dir/download-$arch"
		mkdir -p "$dir/download-$arch"
		if (cd "$dir/download-$arch" && apt-get download -q "libstd-rust-web-dev:$arch=$deb_version" >/dev/null); then
			dpkg-deb -x "$dir"/download-"$arch"/*.deb "$sysroot"
			# The package puts the rlibs under usr/lib/rust-web/lib/rustlib/<triple>/lib.
			local rlib_dir
			rlib_dir=$(find "$sysroot" -type d -path "*/rustlib/$triple/lib" | head -n 1)
			if [ -n "$rlib_dir" ]; then
				# The sysroot is what holds lib/rustlib/<triple>/lib.
				dirname "$(dirname "$(dirname "$(dirname "$rlib_dir")")")" >"$sysroot/.root"
				echo "$deb_version" >"$sysroot/.version"
				echo "sysroot $(cat "$sysroot/.root")" >"$dir/$triple.mode"
				say "$triple: std from libstd-rust-web-dev:$arch $deb_version"
				return
			fi
			say "$triple: libstd-rust-web-dev:$arch has no rustlib/$triple/lib"
		fi
	else
		say "$triple: libstd-rust-web-dev:$arch is ${got:-not available} but rustc-web is $deb_version"
	fi
	say "$triple: FALLBACK: building std from rust-web-src with -Zbuild-std (slower)"
	echo "build-std" >"$dir/$triple.mode"
}

std_for arm64 "$("$here"/cross/target.sh arm64 triple)"
std_for armhf "$("$here"/cross/target.sh armhf triple)"
for triple in "$("$here"/cross/target.sh arm64 triple)" "$("$here"/cross/target.sh armhf triple)"; do
	say "$triple: $(cat "$dir/$triple.mode")"
done
