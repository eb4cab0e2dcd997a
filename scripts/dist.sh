#!/bin/bash
# The release artefacts, built on this machine (`just dist`), in target/dist/:
#
#   fileagent_<version>_amd64.deb, _arm64.deb, _armhf.deb   (scripts/build-deb.sh)
#   fileagent-<version>-x86_64-pc-windows-gnu.zip            fileagent.exe, README.md, COPYRIGHT.txt
#   SHA256SUMS
#
# Needs debhelper, cross/setup-debian.sh (its FILEAGENT_CROSS_DIR) and
# cross/windows.sh setup once.
# The Windows exe is stripped (mingw's strip): the release profile keeps
# symbols, which a download does not need.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
out=$(pwd)/target/dist
rm -rf "$out"
mkdir -p "$out"
for arch in "" arm64 armhf; do
	deb=$(scripts/build-deb.sh $arch | tail -n 1)
	cp "$deb" "$out/"
done
cross/windows.sh build --release --locked
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$(cross/windows.sh exe --release)" "$stage/fileagent.exe"
x86_64-w64-mingw32-strip "$stage/fileagent.exe"
cp README.md "$stage/README.md"
cp debian/copyright "$stage/COPYRIGHT.txt"
zip="fileagent-$version-x86_64-pc-windows-gnu.zip"
(cd "$stage" && zip -q -X -9 "$out/$zip" fileagent.exe README.md COPYRIGHT.txt)
(cd "$out" && sha256sum -- *.deb "$zip" > SHA256SUMS)
ls -l "$out"
echo "fileagent.exe: $(stat -c %s "$stage/fileagent.exe") bytes stripped"
