#!/usr/bin/env bash
# Checks that the workspace's `rust-version` is true of its dependency tree: fails, naming them,
# if any dependency (normal, build or dev, for this host's target) declares a higher
# rust-version than ours, since cargo would then refuse the build on the toolchain we promise.
# (Our own code is held to it by clippy's incompatible_msrv lint, which reads the same field.)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v jq >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "check-msrv: installing jq" >&2
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends jq >&2
    else
        echo "check-msrv: needs jq (apt-get install jq)" >&2
        exit 2
    fi
fi

# `1.89` and `1.89.0` are the same version to cargo.
norm() { awk -F. '{ printf "%d.%d.%d\n", $1, $2, $3 }'; }

OURS=$(cargo metadata --format-version 1 --locked --no-deps |
    jq -r '[.packages[].rust_version] | unique | .[]')
[ "$(wc -l <<<"$OURS")" -eq 1 ] && [ "$OURS" != null ] ||
    { echo "check-msrv: the workspace packages must share one rust-version, found: $OURS" >&2; exit 1; }
OURS_N=$(norm <<<"$OURS")

HOST=$(rustc -vV | sed -n 's/^host: //p')
DEPS=$(cargo metadata --format-version 1 --locked --filter-platform "$HOST" |
    jq -r '.packages[] | select(.source != null and .rust_version != null)
        | "\(.rust_version) \(.name) \(.version)"')

FLOOR=$(cut -d' ' -f1 <<<"$DEPS" | norm | sort -V | tail -n1)
ABOVE=$(while read -r rv name version; do
    if [ "$(printf '%s\n%s\n' "$(norm <<<"$rv")" "$OURS_N" | sort -V | tail -n1)" != "$OURS_N" ]; then
        echo "  $name $version needs Rust $rv"
    fi
done <<<"$DEPS")

if [ -n "$ABOVE" ]; then
    echo "check-msrv: rust-version = \"$OURS\" in Cargo.toml is false; these need more:" >&2
    echo "$ABOVE" >&2
    echo "check-msrv: raise it to $FLOOR (the highest any dependency declares)" >&2
    exit 1
fi
echo "check-msrv: rust-version $OURS holds; the dependencies need at least $FLOOR"
