#!/bin/sh
# Builds target/debian/fileagent_<version>_<arch>.deb from this tree
# (`just deb`). Needs debhelper and a Rust toolchain; run as any user
# (Rules-Requires-Root: no). Prints the package's path on the last line.
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
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb="target/debian/fileagent_${deb_version}_${arch}.deb"
rm -f "$deb"
mkdir -p target/debian
debian/rules clean
debian/rules binary
debian/rules clean
test -f "$deb"
echo "$deb"
