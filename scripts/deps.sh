#!/usr/bin/env bash
# Install what dmsync's build, tests and guest harness need, idempotently.
# Quick when everything is already there. Debian bookworm, run as root.
#
#   scripts/deps.sh          host packages + the guest kernel
#
# The guest kernel is Debian's stock linux-image-6.1.0-*-amd64, extracted
# (not installed) into .cache/kernel/<version>/; .cache/kernel/current names it.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "deps: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (apt-get install); try: sudo $0"
command -v apt-get >/dev/null || die "apt-get not found: dmsync's scripts expect Debian bookworm"

pkgs=(qemu-system-x86 busybox-static dmsetup cryptsetup-bin e2fsprogs fio kmod iproute2 util-linux
      protobuf-compiler ca-certificates chromium help2man strace)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq || die "apt-get update failed: check the network or the apt sources"
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
		|| die "apt-get install ${missing[*]} failed: see the apt output above"
fi
command -v go >/dev/null || die "go not found: install Go 1.26 (/usr/local/go/bin on PATH)"

# The guest kernel: newest linux-image-6.1.0-N-amd64 that apt offers, unless
# DMSYNC_KERNEL names one (e.g. 6.1.0-56-amd64).
kdir=.cache/kernel
mkdir -p "$kdir"
if [ -n "${DMSYNC_KERNEL:-}" ]; then
	kver=$DMSYNC_KERNEL
elif [ -s "$kdir/current" ] && [ -f "$kdir/$(cat "$kdir/current")/boot/vmlinuz-$(cat "$kdir/current")" ]; then
	kver=$(cat "$kdir/current")
else
	apt-cache show linux-image-6.1.0-1-amd64 >/dev/null 2>&1 || apt-get update -qq || true
	kver=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' |
		sed 's/^linux-image-//' | sort -V | tail -1)
	[ -n "$kver" ] || die "no linux-image-6.1.0-*-amd64 package in apt: is this Debian bookworm with 'main' enabled?"
fi
if [ ! -f "$kdir/$kver/boot/vmlinuz-$kver" ]; then
	echo "deps: fetching guest kernel linux-image-$kver"
	tmp=$(mktemp -d); chmod 755 "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "linux-image-$kver") || die "apt-get download linux-image-$kver failed"
	rm -rf "$kdir/$kver.part"
	dpkg-deb -x "$tmp"/linux-image-"$kver"_*.deb "$kdir/$kver.part" || die "cannot unpack linux-image-$kver"
	depmod -b "$kdir/$kver.part" "$kver" || die "depmod for $kver failed"
	mv "$kdir/$kver.part" "$kdir/$kver"
fi
echo "$kver" > "$kdir/current"
