#!/usr/bin/env bash
# Installs passknock: binaries, systemd unit, example config (never over an existing one) and the
# dialplan file. Run from the source tree as root.
#
#   bash dist/install.sh              build (release) and install
#   bash dist/install.sh --no-build   install binaries already built in target/release
#   bash dist/install.sh --uninstall  remove binaries, unit and dialplan file; keep config and state
#
# PREFIX (default /usr/local) and DESTDIR (default empty: the live system) relocate everything;
# BUILT (default target/release) is where --no-build takes the binaries from.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BIN=$DESTDIR$PREFIX/bin
SHARE=$DESTDIR$PREFIX/share/passknock
ETC=$DESTDIR/etc/passknock
UNIT=$DESTDIR/etc/systemd/system/passknockd.service
BUILT=${BUILT:-target/release}

systemctl_maybe() {
    if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl "$@" || true
    fi
}

case "${1:-}" in
--uninstall)
    systemctl_maybe disable --now passknockd.service
    rm -f "$BIN/passknockd" "$BIN/passknock" "$UNIT" "$SHARE/passknock.conf" "$SHARE/passknock.toml.example"
    rmdir "$SHARE" 2>/dev/null || true
    systemctl_maybe daemon-reload
    echo "removed binaries, unit and dialplan file."
    echo "kept: $ETC (config, secrets) and /var/lib/passknock (grants, bans, accounts)."
    echo "the nftables table stays until its elements time out; drop it now with: nft delete table inet passknock"
    exit 0
    ;;
--no-build) ;;
"") cargo build --release --locked --bin passknockd --bin passknock ;;
*) echo "usage: $0 [--no-build|--uninstall]" >&2; exit 2 ;;
esac

install -d -m 0755 "$BIN" "$SHARE" "$(dirname "$UNIT")"
install -d -m 0700 "$ETC"
install -m 0755 "$BUILT/passknockd" "$BUILT/passknock" "$BIN/"
install -m 0644 dialplan/passknock.conf "$SHARE/passknock.conf"
install -m 0644 examples/passknock.toml "$SHARE/passknock.toml.example"
sed "s#/usr/local/bin/#$PREFIX/bin/#" dist/passknockd.service > "$UNIT"
chmod 0644 "$UNIT"
if [ -e "$ETC/passknock.toml" ]; then
    echo "kept your config $ETC/passknock.toml (the new example is $SHARE/passknock.toml.example)"
else
    install -m 0600 examples/passknock.toml "$ETC/passknock.toml"
    echo "installed the example config at $ETC/passknock.toml: read it before you start"
fi
systemctl_maybe daemon-reload
echo "installed passknockd and passknock to $BIN, the unit to $UNIT, the dialplan file to $SHARE."
echo "next: check the config (passknockd --check --config /etc/passknock/passknock.toml),"
echo "      then: systemctl enable --now passknockd"
