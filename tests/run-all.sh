#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (nftables, iproute2,
# debootstrap, the Debian packaging tools), builds or reuses the cached Asterisk 22 + SIPp chroot and
# the clean Debian root for the package test, then runs every test (the package test included).
# Run as root: the tests make network namespaces and nftables tables.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "run-all: the tests need root (network namespaces, nftables); try: sudo bash tests/run-all.sh" >&2
    exit 1
fi

need=()
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v debootstrap >/dev/null || need+=(debootstrap)
# The standard `knock` client (tests/knock.rs) and knockd (benches/knock_flood.rs).
command -v knock >/dev/null || need+=(knockd)
# `script`, for the status screen on a real terminal (tests/status.rs).
command -v script >/dev/null || need+=(bsdutils)
# libfaketime, to step the daemon's wall clock alone (tests/clock_step.rs).
command -v faketime >/dev/null || need+=(faketime)
# A real rotation of the audit log, and bans from a real fail2ban (tests/operations.rs). That file
# also runs `systemd-analyze verify` on the unit when systemd is installed.
command -v logrotate >/dev/null || need+=(logrotate)
command -v fail2ban-client >/dev/null || need+=(fail2ban)
# The package test (tests/package.rs): dpkg-shlibdeps and man (logrotate is above).
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
command -v man >/dev/null || need+=(man-db)
# promtool, to check the daemon's /metrics and the Grafana dashboard's queries (tests/metrics.rs).
command -v promtool >/dev/null || need+=(prometheus)
# A real PostgreSQL server for the store shared by several nodes (tests/support/pg.rs starts a
# throwaway cluster from Debian's server binaries).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
    echo "run-all: installing ${need[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# Build the end-to-end chroot up front so its first build is not charged to one test's timeout.
if [ -f tests/harness/build-chroot.sh ]; then
    bash tests/harness/build-chroot.sh >/dev/null
fi
# And the clean Debian root the package test installs the .deb into.
bash tests/harness/build-debian-root.sh >/dev/null

cargo test --workspace

# The engine's rules are unit-tested over in-memory fakes: no nft, no SQLite, no root. Prove it by
# running them as an unprivileged user (the test binary is already built by the line above).
engine_tests=$(cargo test -p passknock --lib --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*"' | head -1 | cut -d'"' -f4)
if [ -n "$engine_tests" ] && id nobody >/dev/null 2>&1; then
    # A copy, so that a clone under a private home still lets the user run it.
    unprivileged=$(mktemp -d)
    install -m 0755 "$engine_tests" "$unprivileged/engine-tests"
    chmod 0755 "$unprivileged"
    (cd / && runuser -u nobody -- "$unprivileged/engine-tests" engine:: -q) ||
        { echo "run-all: the engine's unit tests fail as a non-root user" >&2; exit 1; }
    rm -rf "$unprivileged"
fi
