#!/usr/bin/env bash
# Build dmsync's Debian package with dpkg-deb: static binaries stamped with
# the version, the hardened systemd unit, the modules-load file, man pages,
# shell completion and the maintainer scripts of deploy/debian/.
#
#   scripts/deb.sh [OUTDIR]     (default bin/); prints the .deb's path
#
# DMSYNC_VERSION overrides the version (default: from git describe, or
# 0.0~git<date>.<commit> without tags); DMSYNC_DEB_COMPRESS the dpkg-deb
# compression flags (default -Zxz; the package test uses -Zgzip -z1).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

die() { echo "deb: $*" >&2; exit 1; }
command -v dpkg-deb >/dev/null || die "dpkg-deb not found: apt-get install dpkg"
command -v go >/dev/null || die "go not found: install Go 1.26 (/usr/local/go/bin on PATH)"
if ! command -v help2man >/dev/null; then
	[ "$(id -u)" = 0 ] || die "help2man not found (for the man pages): apt-get install help2man"
	echo "deb: installing help2man (man pages)" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends help2man >/dev/null \
		|| die "apt-get install help2man failed"
fi

out=${1:-bin}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Debian versions start with a digit; git tags are vX.Y.Z.
version=${DMSYNC_VERSION:-}
if [ -z "$version" ]; then
	if desc=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
		version=${desc#v}
		version=${version//-/+}
	else
		version="0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date +%Y%m%d).$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
	fi
	if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
		version+="+dirty"
	fi
fi
[[ $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "version $version is not a Debian version (digits first; letters, digits, . + ~ -)"
arch=$(dpkg --print-architecture)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/DEBIAN "$root"/usr/sbin "$root"/lib/systemd/system "$root"/usr/lib/modules-load.d \
	"$root"/usr/lib/dmsync "$root"/usr/share/doc/dmsync/examples/events.d "$root"/usr/share/man/man8 \
	"$root"/usr/share/bash-completion/completions "$root"/usr/share/zsh/vendor-completions \
	"$root"/usr/share/fish/vendor_completions.d "$root"/etc/dmsync/events.d

echo "deb: building dmsync $version for $arch" >&2
# No -trimpath: the compiled packages are shared with `make build`'s cache.
CGO_ENABLED=0 go build -ldflags "-s -w -X github.com/dmsync/dmsync/internal/version.Version=$version" \
	-o "$root/usr/sbin/" ./cmd/dmsyncd ./cmd/dmsync

# The unit: the packaged binary's path.
sed -e 's|/usr/local/sbin/dmsyncd|/usr/sbin/dmsyncd|g' \
	-e 's|^# Install:.*|# Installed by the dmsync package; override with systemctl edit dmsyncd.|' \
	-e '/^#           install -m/d' -e '/^#           systemctl daemon-reload/d' \
	deploy/dmsyncd.service > "$root/lib/systemd/system/dmsyncd.service"
grep -q '^ExecStart=/usr/sbin/dmsyncd ' "$root/lib/systemd/system/dmsyncd.service" || die "unit: ExecStart not rewritten"
install -m 0644 deploy/dmsync-modules.conf "$root/usr/lib/modules-load.d/dmsync.conf"
install -m 0755 deploy/debian/mirrors-live "$root/usr/lib/dmsync/mirrors-live"
install -m 0644 deploy/debian/50-log.example "$root/usr/share/doc/dmsync/examples/events.d/50-log"
install -m 0644 README.md "$root/usr/share/doc/dmsync/README.md"
install -m 0644 deploy/debian/copyright "$root/usr/share/doc/dmsync/copyright"
printf 'dmsync (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- dmsync developers <dmsync@localhost>  %s\n' \
	"$version" "$(git rev-parse HEAD 2>/dev/null || echo 'a source tree')" "$(date -R)" | gzip -9n > "$root/usr/share/doc/dmsync/changelog.gz"

# Man pages and completion. A CLI that generates its own (cobra: `dmsync
# completion SHELL`, `dmsync man DIR`) is used; otherwise help2man turns
# --help into a man page and there is no completion.
bin=$root/usr/sbin
if "$bin/dmsync" man "$work/man" >/dev/null 2>&1 && ls "$work"/man/*.8 >/dev/null 2>&1; then
	cp "$work"/man/*.8 "$root/usr/share/man/man8/"
else
	help2man --no-info --section 8 --version-string "$version" --name "dmsync admin CLI" \
		--no-discard-stderr "$bin/dmsync" > "$root/usr/share/man/man8/dmsync.8"
fi
help2man --no-info --section 8 --version-string "$version" --name "dmsync daemon: userspace dirty log and replication" \
	--no-discard-stderr "$bin/dmsyncd" > "$root/usr/share/man/man8/dmsyncd.8"
gzip -9n "$root"/usr/share/man/man8/*.8
completion=none
if "$bin/dmsync" completion bash > "$root/usr/share/bash-completion/completions/dmsync" 2>/dev/null; then
	"$bin/dmsync" completion zsh > "$root/usr/share/zsh/vendor-completions/_dmsync"
	"$bin/dmsync" completion fish > "$root/usr/share/fish/vendor_completions.d/dmsync.fish"
	completion="bash zsh fish"
else
	rm -rf "$root/usr/share/bash-completion" "$root/usr/share/zsh" "$root/usr/share/fish"
	echo "deb: dmsync has no 'completion' command yet: the package ships no shell completion" >&2
fi

for s in postinst prerm postrm; do
	install -m 0755 "deploy/debian/$s" "$root/DEBIAN/$s"
done
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" deploy/debian/control.in > "$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
find "$root" -type d -exec chmod 0755 {} +

deb=$out/dmsync_${version}_${arch}.deb
# shellcheck disable=SC2086 # word splitting of the flags is intended
dpkg-deb --root-owner-group ${DMSYNC_DEB_COMPRESS:--Zxz} --build "$root" "$deb" >/dev/null
echo "deb: $deb (completion: $completion)" >&2
echo "$deb"
