#!/usr/bin/env bash
# Builds the Debian package from this tree with the Debian tools (dpkg-shlibdeps, dpkg-deb): the
# three binaries, the hardened unit (not enabled), the example config as a 0600 conffile, the
# dialplan file, man pages and completions generated from the clap definitions, the logrotate
# snippet and the maintainer scripts in dist/deb/. Prints the .deb's path on stdout.
#
#   bash dist/deb/build.sh             release build, then target/debian/passknock_<version>_<arch>.deb
#   bash dist/deb/build.sh --no-build  package the binaries already in target/release
#
# Environment (all optional):
#   VERSION            the package version (default: Cargo's version with Debian revision -1)
#   ARCH               the Debian architecture (default: dpkg --print-architecture)
#   DEBFULLNAME, DEBEMAIL  the Maintainer (default: git's user.name and user.email)
#   SOURCE_DATE_EPOCH  dates the man pages and the changelog (default: the last commit's time)
#   CARGO_TARGET_DIR   where cargo builds (default: target)
set -euo pipefail
cd "$(dirname "$0")/../.."
# Modes are set explicitly below; everything else is 0755/0644 whatever the caller's umask.
umask 022

die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }
for tool in dpkg-deb dpkg-shlibdeps gzip; do
    command -v "$tool" >/dev/null || die "$tool is missing: apt-get install dpkg-dev"
done

TARGET=${CARGO_TARGET_DIR:-target}
case "${1:-}" in
"") cargo build --release --locked --workspace --bins >&2 ;;
--no-build) ;;
*) die "usage: $0 [--no-build]" ;;
esac
BUILT=$TARGET/release

PKGID=$(cargo pkgid --offline -p passknock)
VERSION=${VERSION:-${PKGID##*[#@]}-1}
ARCH=${ARCH:-$(dpkg --print-architecture)}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
MAINTAINER="${DEBFULLNAME:-$(git config user.name || echo passknock maintainers)} <${DEBEMAIL:-$(git config user.email || echo root@localhost)}>"

OUT=$TARGET/debian
NAME=passknock_${VERSION}_${ARCH}
# The package's tree sits where dpkg-shlibdeps expects a package's files, debian/<package>, beside
# the debian/control it reads to learn the package's name.
STAGE=$OUT/$NAME
TREE=$STAGE/debian/passknock
GEN=$OUT/gen
rm -rf "$STAGE" "$GEN"
mkdir -p "$OUT"

# Man pages and completions from the clap definitions; a dev-profile example, so clap_mangen and
# clap_complete never reach the shipped binaries.
cargo run --quiet --locked --example dist-gen -- "$GEN" >&2

d() { install -d -m 0755 "$TREE/$1"; }
d usr/bin
install -m 0755 "$BUILT/passknockd" "$BUILT/passknock" "$BUILT/passknock-knock" "$TREE/usr/bin/"

d lib/systemd/system
UNIT=$TREE/lib/systemd/system/passknockd.service
sed -e 's#/usr/local/bin/#/usr/bin/#g' dist/passknockd.service >"$UNIT"
chmod 0644 "$UNIT"
grep -q '^ExecStart=/usr/bin/passknockd ' "$UNIT" || die "the unit's ExecStart does not point at /usr/bin"

# The config may name secrets, and secrets live beside it: root's alone.
install -d -m 0700 "$TREE/etc/passknock"
install -m 0600 examples/passknock.toml "$TREE/etc/passknock/passknock.toml"
d etc/logrotate.d
install -m 0644 dist/passknock.logrotate "$TREE/etc/logrotate.d/passknock"

d usr/share/passknock
install -m 0644 dialplan/passknock.conf "$TREE/usr/share/passknock/passknock.conf"

DOC=usr/share/doc/passknock
d "$DOC"
install -m 0644 dist/deb/copyright "$TREE/$DOC/copyright"
install -m 0644 examples/passknock.toml "$TREE/$DOC/passknock.toml.example"
gzip -9n <README.md >"$TREE/$DOC/README.md.gz"
{
    printf 'passknock (%s) unstable; urgency=medium\n\n' "$VERSION"
    printf '  * Built from the passknock source tree at commit %s.\n\n' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    printf ' -- %s  %s\n' "$MAINTAINER" "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$TREE/$DOC/changelog.Debian.gz"

for section in 1 5 8; do d "usr/share/man/man$section"; done
for page in "$GEN"/man/*.[18] dist/man/passknock.toml.5; do
    section=${page##*.}
    gzip -9n <"$page" >"$TREE/usr/share/man/man$section/$(basename "$page").gz"
done
chmod 0644 "$TREE"/usr/share/man/man*/*

d usr/share/bash-completion/completions
d usr/share/zsh/vendor-completions
d usr/share/fish/vendor_completions.d
install -m 0644 "$GEN"/completions/bash/* "$TREE/usr/share/bash-completion/completions/"
install -m 0644 "$GEN"/completions/zsh/* "$TREE/usr/share/zsh/vendor-completions/"
install -m 0644 "$GEN"/completions/fish/* "$TREE/usr/share/fish/vendor_completions.d/"

# Depends: the shared libraries the binaries link, as dpkg-shlibdeps finds them, plus (in
# dist/deb/control) nftables, whose nft the daemon runs, and procps, whose /bin/kill is the unit's
# ExecReload.
printf 'Source: passknock\n\nPackage: passknock\nArchitecture: any\n' >"$STAGE/debian/control"
install -d -m 0755 "$TREE/DEBIAN"
SHLIBS=$(cd "$STAGE" && dpkg-shlibdeps -O debian/passknock/usr/bin/passknockd \
    debian/passknock/usr/bin/passknock debian/passknock/usr/bin/passknock-knock |
    sed -n 's/^shlibs:Depends=//p')
[ -n "$SHLIBS" ] || die "dpkg-shlibdeps found no shared library dependencies"

sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@MAINTAINER@|$MAINTAINER|" \
    -e "s|@SHLIBS@|$SHLIBS|" -e "s|@INSTALLED_SIZE@|$(du -sk "$TREE" | cut -f1)|" \
    dist/deb/control >"$TREE/DEBIAN/control"
install -m 0644 dist/deb/conffiles "$TREE/DEBIAN/conffiles"
install -m 0755 dist/deb/postinst dist/deb/prerm dist/deb/postrm "$TREE/DEBIAN/"
# Conffiles are left out, as dpkg tracks their sums itself.
(cd "$TREE" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\n' |
    LC_ALL=C sort | xargs md5sum) >"$TREE/DEBIAN/md5sums"
chmod 0644 "$TREE/DEBIAN/md5sums"

dpkg-deb --root-owner-group -Zxz --build "$TREE" "$OUT/$NAME.deb" >&2
printf '%s\n' "$OUT/$NAME.deb"
