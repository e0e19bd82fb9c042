#!/usr/bin/env bash
# Checks that the committed include/dws.h matches what cbindgen generates from
# src/lib.rs; exits 1 when it is stale.
#   check-header.sh          check (CI)
#   check-header.sh --write  regenerate include/dws.h in place
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
header="$here/include/dws.h"

if ! command -v cbindgen >/dev/null 2>&1; then
    echo "check-header.sh: cbindgen not found; install it with: cargo install cbindgen --locked" >&2
    exit 2
fi

tmp="$(mktemp "${TMPDIR:-/tmp}/dws.h.XXXXXX")"
trap 'rm -f "$tmp"' EXIT

# cbindgen parses the crate's source only (parse_deps = false); -q hides its
# notes about private items.
(cd "$here" && cbindgen -q --config cbindgen.toml --crate dws-capi --output "$tmp")

if [[ "${1:-}" == "--write" ]]; then
    cp "$tmp" "$header"
    echo "check-header.sh: wrote $header"
    exit 0
fi

if [[ ! -f "$header" ]]; then
    echo "check-header.sh: $header is missing; run: $0 --write" >&2
    exit 1
fi
if ! diff -u "$header" "$tmp" >&2; then
    echo "check-header.sh: include/dws.h is stale (differs from cbindgen's output above);" \
        "regenerate it with: $0 --write" >&2
    exit 1
fi
echo "check-header.sh: include/dws.h is up to date"
