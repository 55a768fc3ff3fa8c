#!/usr/bin/env bash
# Builds, once, the clean Debian root that tests/package.rs installs the .deb into, and prints the
# path of its tarball on stdout. Each test run unpacks a fresh copy, so a run never sees what an
# earlier one installed.
#
# What is in it: a minbase Debian of the host's suite (what the PBX distributions run) with
# systemd's files (not running: `systemd-analyze verify` and offline `systemctl enable` need
# them, as a PBX has them), apt's package lists, and the .debs of `nftables` and its libraries in
# apt's cache, not installed: the test runs `apt-get install ./passknock_….deb` with no route
# out, so the package's Depends must pull them in from there.
#
# Guarantees, as build-chroot.sh's: one build at a time (flock); the tarball is written under a
# temporary name and renamed into place last, so a half-built root is never used; each network
# step runs under a timeout.
#
# Environment (all optional): PASSKNOCK_CACHE, PASSKNOCK_MIRROR, PASSKNOCK_NET_TIMEOUT,
# PASSKNOCK_LOCK_TIMEOUT (see build-chroot.sh); PASSKNOCK_DEB_SUITE (default: the host's suite,
# else bookworm).
set -euo pipefail

LOG_NAME=build-debian-root
# shellcheck source=tests/harness/lib.sh
source "$(dirname "$0")/lib.sh"

host_suite() {
    # shellcheck disable=SC1091 # the host's own os-release
    (. /etc/os-release 2>/dev/null && printf '%s\n' "${VERSION_CODENAME:-}")
}
SUITE=${PASSKNOCK_DEB_SUITE:-$(host_suite)}
SUITE=${SUITE:-bookworm}
# Bump when the recipe changes: a new name means a fresh build.
ROOT_NAME=debian-$SUITE-pkgtest-v2
# Installed, as on any PBX.
INSTALLED=(systemd procps)
# Downloaded, not installed: the package under test must bring them in.
CACHED_DEBS=(nftables)

CACHE=${PASSKNOCK_CACHE:-/var/cache/passknock}
NET_TIMEOUT=${PASSKNOCK_NET_TIMEOUT:-900}
LOCK_TIMEOUT=${PASSKNOCK_LOCK_TIMEOUT:-1800}
FINAL=$CACHE/$ROOT_NAME.tar

# Fast path, no lock: the tarball only ever appears complete.
if [[ -f $FINAL ]]; then
    printf '%s\n' "$FINAL"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap and chroot need it)"
mkdir -p "$CACHE"
exec 9>"$CACHE/.build-$ROOT_NAME.lock"
flock -w "$LOCK_TIMEOUT" 9 || die "another build held the lock for more than ${LOCK_TIMEOUT}s"
if [[ -f $FINAL ]]; then
    printf '%s\n' "$FINAL"
    exit 0
fi

need_debootstrap
MIRROR=${PASSKNOCK_MIRROR:-$(host_mirror | head -n1)}
START=$(date +%s)

rm -rf "$CACHE"/.tmp-"$ROOT_NAME".*
TMP=$(mktemp -d "$CACHE/.tmp-$ROOT_NAME.XXXXXX")
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT
ROOT=$TMP/root
mkdir -m 755 "$ROOT"

log "debootstrap $SUITE into $ROOT${MIRROR:+ from $MIRROR}"
# shellcheck disable=SC2086 # MIRROR may be empty: debootstrap then uses its default mirror.
net "debootstrap" debootstrap --variant=minbase "$SUITE" "$ROOT" $MIRROR >&2

# Nothing installed into the root may start a service on the host.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

IN_ROOT=(chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive LC_ALL=C)
APT_OPTS=(-o Acquire::Check-Valid-Until=false -o Acquire::Retries=3 -o Acquire::http::Timeout=60)
log "apt-get update in the root"
net "apt-get update" "${IN_ROOT[@]}" apt-get "${APT_OPTS[@]}" update >&2
log "apt-get install ${INSTALLED[*]}"
net "apt-get install" "${IN_ROOT[@]}" apt-get "${APT_OPTS[@]}" install -y -q \
    --no-install-recommends "${INSTALLED[@]}" >&2
"${IN_ROOT[@]}" apt-get clean
log "apt-get install --download-only ${CACHED_DEBS[*]}"
net "apt-get download" "${IN_ROOT[@]}" apt-get "${APT_OPTS[@]}" install -y -q \
    --download-only --no-install-recommends "${CACHED_DEBS[@]}" >&2
ls "$ROOT"/var/cache/apt/archives/nftables_*.deb >/dev/null || die "nftables was not downloaded"
# The test has no network: a lookup must fail at once.
printf '# passknock package test root: no DNS\nnameserver 127.0.0.1\n' >"$ROOT/etc/resolv.conf"

tar -C "$ROOT" --numeric-owner -cf "$TMP/root.tar" .
mv "$TMP/root.tar" "$FINAL"
trap - EXIT
cleanup

log "built $FINAL ($(du -h "$FINAL" | cut -f1)) in $(($(date +%s) - START))s"
printf '%s\n' "$FINAL"
