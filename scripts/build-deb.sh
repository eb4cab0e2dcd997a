#!/bin/sh
# Builds target/debian/fileagent_<version>_<arch>.deb from this tree:
#
#   scripts/build-deb.sh          for this machine (`just deb`)
#   scripts/build-deb.sh arm64    64-bit Raspberry Pi OS (`just deb-arm64`)
#   scripts/build-deb.sh armhf    32-bit Raspberry Pi OS (`just deb-armhf`)
#
# Needs debhelper and a Rust toolchain; the arm builds need
# cross/setup-debian.sh once. Runs as any user (Rules-Requires-Root: no).
# Prints the package's path on the last line.
set -eu
cd "$(dirname "$0")/.."

for tool in dh dpkg-parsechangelog dpkg-checkbuilddeps; do
	command -v "$tool" >/dev/null || {
		echo "build-deb: $tool is missing: sudo apt-get install debhelper dpkg-dev" >&2
		exit 2
	}
done
dpkg-checkbuilddeps

deb_version=$(dpkg-parsechangelog -SVersion)
cargo_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
if [ "$deb_version" != "$cargo_version" ]; then
	echo "build-deb: debian/changelog says $deb_version but Cargo.toml says $cargo_version: add a changelog entry (dch -v $cargo_version)" >&2
	exit 2
fi

# Reproducible: file dates and the man pages' date come from the changelog.
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -STimestamp)
export SOURCE_DATE_EPOCH
arch=${1:-$(dpkg-architecture -qDEB_BUILD_ARCH)}
case $arch in
amd64 | arm64 | armhf) ;;
*)
	echo "build-deb: unknown architecture $arch: use arm64 or armhf (or none for this machine)" >&2
	exit 2
	;;
esac
deb="target/debian/fileagent_${deb_version}_${arch}.deb"
rm -f "$deb"
mkdir -p target/debian
if [ "$arch" != "$(dpkg-architecture -qDEB_BUILD_ARCH)" ]; then
	# Cross: the cross gcc is the C compiler; nothing runs tests here.
	CC=$(dpkg-architecture -a"$arch" -qDEB_HOST_GNU_TYPE 2>/dev/null)-gcc
	export CC DEB_BUILD_PROFILES=cross DEB_BUILD_OPTIONS="nocheck ${DEB_BUILD_OPTIONS:-}"
fi
rules() { dpkg-architecture -a"$arch" -f -c debian/rules "$@"; }
rules clean
rules binary
rules clean
test -f "$deb"
echo "$deb"
