#!/bin/sh
# A stand-in C compiler for `cargo check` of the Apple targets on Linux
# (cross/macos.sh), where there is no Apple SDK: build scripts (ring,
# zstd-sys) compile C and assembly, and a check never links, so each
# object they ask for is written empty. Nothing it makes is ever linked.
out=""
while [ $# -gt 0 ]; do
	case $1 in
	-o) out=$2; shift ;;
	-o*) out=${1#-o} ;;
	esac
	shift
done
[ -z "$out" ] || : > "$out"
