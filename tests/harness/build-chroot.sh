#!/usr/bin/env bash
# Builds, once, the Debian sid chroot that the end-to-end tests run Asterisk 22 and SIPp from, and
# prints its path on stdout. A complete cached chroot is reused at once.
#
# Why a chroot: the host's Debian suite has neither Asterisk 22 nor SIPp; sid has both (see
# DESIGN.md, "Real Asterisk for tests"). It lives outside the clone, under the cache directory, so
# every clone and every test run shares it.
#
# Guarantees:
#   - a chroot is used only if its marker file exists; the marker is written last, inside a temp
#     directory that is then renamed into place, so a half-built chroot is never seen;
#   - concurrent invocations serialize on a flock and the loser reuses the winner's build;
#   - every network step runs under a timeout, so a missing network fails fast with a reason.
#
# Environment (all optional):
#   PASSKNOCK_CACHE        cache directory (default /var/cache/passknock)
#   PASSKNOCK_MIRROR       Debian mirror URL (default: the host's own apt mirror, else debootstrap's)
#   PASSKNOCK_NET_TIMEOUT  seconds allowed for each network step (default 900)
#   PASSKNOCK_LOCK_TIMEOUT seconds to wait for another build to finish (default 1800)
set -euo pipefail

# Bump when the package list or the build recipe changes: a new name means a fresh build.
CHROOT_NAME=sid-asterisk-v3
# The gsm prompts: the DISA call speaks stock sounds (agent-pass, auth-thankyou, …).
PACKAGES=(asterisk sip-tester asterisk-core-sounds-en-gsm)
MARKER=.passknock-chroot-complete

CACHE=${PASSKNOCK_CACHE:-/var/cache/passknock}
NET_TIMEOUT=${PASSKNOCK_NET_TIMEOUT:-900}
LOCK_TIMEOUT=${PASSKNOCK_LOCK_TIMEOUT:-1800}
FINAL=$CACHE/$CHROOT_NAME

LOG_NAME=build-chroot
# shellcheck source=tests/harness/lib.sh
source "$(dirname "$0")/lib.sh"

# Fast path, no lock: the marker is only ever present in a complete chroot.
if [[ -f $FINAL/$MARKER ]]; then
    printf '%s\n' "$FINAL"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap and chroot need it)"
mkdir -p "$CACHE"

exec 9>"$CACHE/.build.lock"
if ! flock -w "$LOCK_TIMEOUT" 9; then
    die "another build held $CACHE/.build.lock for more than ${LOCK_TIMEOUT}s"
fi

# Whoever held the lock before us may have finished the job.
if [[ -f $FINAL/$MARKER ]]; then
    printf '%s\n' "$FINAL"
    exit 0
fi

need_debootstrap

MIRROR=${PASSKNOCK_MIRROR:-$(host_mirror | head -n1)}
START=$(date +%s)

# Leftovers of builds that died are ours to remove: we hold the lock.
rm -rf "$CACHE"/.tmp-"$CHROOT_NAME".* "$FINAL"
TMP=$(mktemp -d "$CACHE/.tmp-$CHROOT_NAME.XXXXXX")
chmod 755 "$TMP"
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT

log "debootstrap sid into $TMP${MIRROR:+ from $MIRROR}"
# shellcheck disable=SC2086 # MIRROR may be empty: debootstrap then uses its default mirror.
net "debootstrap" debootstrap --variant=minbase sid "$TMP" $MIRROR >&2

# Packages must not start services inside the chroot: an Asterisk started by a postinst would run
# in the host's network namespace and outlive the build.
printf '#!/bin/sh\nexit 101\n' >"$TMP/usr/sbin/policy-rc.d"
chmod 755 "$TMP/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$TMP/etc/resolv.conf"

IN_CHROOT=(chroot "$TMP" env DEBIAN_FRONTEND=noninteractive LC_ALL=C)
APT_OPTS=(-o Acquire::Check-Valid-Until=false -o Acquire::Retries=3 -o Acquire::http::Timeout=60)

log "apt-get update in the chroot"
net "apt-get update" "${IN_CHROOT[@]}" apt-get "${APT_OPTS[@]}" update >&2
log "apt-get install ${PACKAGES[*]}"
net "apt-get install" "${IN_CHROOT[@]}" apt-get "${APT_OPTS[@]}" install -y --no-install-recommends \
    "${PACKAGES[@]}" >&2
"${IN_CHROOT[@]}" apt-get clean
# The tests run with no network but their namespaces: a lookup (Asterisk resolves its hostname at
# start) must fail at once on the namespace's own loopback, never reach for the host's resolver.
printf '# passknock test chroot: no DNS\nnameserver 127.0.0.1\n' >"$TMP/etc/resolv.conf"

# A root-run Asterisk refuses or trips over files owned by its packaged user; the tests run
# everything as root, so the whole tree is root's.
find "$TMP" -xdev \( ! -user 0 -o ! -group 0 \) -exec chown -h 0:0 {} +

for bin in /usr/sbin/asterisk /usr/bin/sipp; do
    [[ -x $TMP$bin ]] || die "$bin missing after install"
done
# tests/support/sipp.rs plays these RFC 4733 captures as DTMF.
[[ -f $TMP/usr/share/sip-tester/dtmf_2833_pound.pcap ]] ||
    die "SIPp's dtmf_2833_*.pcap files are not in /usr/share/sip-tester"

# shellcheck disable=SC2016 # dpkg-query expands ${Package}, not the shell.
VERSIONS=$("${IN_CHROOT[@]}" dpkg-query -W -f '${Package} ${Version}\n' "${PACKAGES[@]}")
# The marker goes last: only now is the chroot complete.
printf 'built %s\n%s\n' "$(date -u +%FT%TZ)" "$VERSIONS" >"$TMP/$MARKER"
mv "$TMP" "$FINAL"
trap - EXIT

log "built $FINAL in $(($(date +%s) - START))s:"
log "$(tr '\n' ' ' <<<"$VERSIONS")"
printf '%s\n' "$FINAL"
