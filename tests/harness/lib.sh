# Shared by the harness's root builders (build-chroot.sh, build-debian-root.sh): logging, network
# steps under a timeout, and the host's own Debian mirror. Sourced, never run.
#
# Expects LOG_NAME (the builder's name in messages) and NET_TIMEOUT (seconds per network step).

log() { printf '%s: %s\n' "$LOG_NAME" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Runs a network step under a timeout and names it if it fails: a missing network fails fast
# with a reason instead of hanging a test run.
net() {
    local what=$1
    shift
    local rc=0
    timeout --kill-after=30 "$NET_TIMEOUT" "$@" || rc=$?
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        die "$what timed out after ${NET_TIMEOUT}s (is the Debian mirror reachable?)"
    elif [[ $rc -ne 0 ]]; then
        die "$what failed with exit code $rc"
    fi
}

# The host's own Debian mirror, read from its apt sources, so we go where apt already goes.
host_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk '
            /^URIs:/ { uri = $2 }
            /^Suites:/ { if ($0 !~ /security/ && uri ~ /\/debian\/?$/) { print uri; exit } }
        ' "$f"
    done | head -n1
    if [[ -f /etc/apt/sources.list ]]; then
        awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list
    fi
}

# Installs debootstrap on the host if it is missing; a fresh machine may have no package lists.
need_debootstrap() {
    command -v debootstrap >/dev/null && return 0
    log "installing debootstrap on the host"
    net "apt-get update (host)" apt-get -q update >&2
    net "apt-get install debootstrap" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends debootstrap >&2
}
