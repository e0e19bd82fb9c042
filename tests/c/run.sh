#!/usr/bin/env bash
# C tests of the dws C ABI on the host, against the static and the shared library.
#
# Builds libdws (cargo build -p dws-capi --release), compiles tests/c/test_dws.c
# with gcc -std=c99 -Wall -Wextra -Werror and AddressSanitizer + UBSan, links it
# once against libdws.a and once against libdws.so, and runs both over every
# reference fixture (tests/fixtures/*/model.dws + case.bin, plus the int8
# model.int8.dws + case_int8.bin and the 16x8 model.16x8.dws + case_16x8.bin
# where present) and the bad-input cases. Prints one line per case, then "N passed, M failed" over both binaries.
# Exit status 0 only when nothing failed.
#
# Environment: CARGO_TARGET_DIR (honoured), CC (default gcc), DWS_C_FIXTURES
# (space-separated fixture names to run instead of all).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cc="${CC:-gcc}"

die() {
    echo "tests/c/run.sh: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

command -v "$cc" >/dev/null 2>&1 ||
    die "C compiler '$cc' not found (Debian: apt-get install -y gcc)"
command -v cargo >/dev/null 2>&1 ||
    die "cargo not found (install Rust with rustup, https://rustup.rs)"

cd "$root" || die "cannot enter $root"

echo "== building libdws (cargo build -p dws-capi --release)"
cargo build -p dws-capi --release >&2 || die "cargo build -p dws-capi --release failed"

target_dir="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[[ -n "$target_dir" ]] || target_dir="${CARGO_TARGET_DIR:-$root/target}"
lib_dir="$target_dir/release"
[[ -f "$lib_dir/libdws.a" && -f "$lib_dir/libdws.so" ]] ||
    die "libdws.a / libdws.so not found in $lib_dir"

build="$target_dir/c-tests"
mkdir -p "$build" || die "cannot create $build"

cflags=(-std=c99 -Wall -Wextra -Werror -g -O1
    -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
    -I "$root/dws-embedded/capi/include")
# What the Rust standard library inside libdws.a needs (rustc --print native-static-libs).
static_libs=(-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)

echo "== compiling tests/c/test_dws.c ($cc, static and shared)"
"$cc" "${cflags[@]}" -o "$build/test_dws_static" "$root/tests/c/test_dws.c" \
    "$lib_dir/libdws.a" "${static_libs[@]}" ||
    die "compiling or linking test_dws.c against libdws.a failed"
"$cc" "${cflags[@]}" -o "$build/test_dws_shared" "$root/tests/c/test_dws.c" \
    -L "$lib_dir" -Wl,-rpath,"$lib_dir" -ldws -lm ||
    die "compiling or linking test_dws.c against libdws.so failed"
# The shared binary must really use the shared library.
if command -v ldd >/dev/null 2>&1; then
    deps="$(ldd "$build/test_dws_shared" 2>&1)"
    grep -q "libdws.so" <<<"$deps" || die "test_dws_shared is not linked against libdws.so"
fi

fixtures=()
if [[ -n "${DWS_C_FIXTURES:-}" ]]; then
    for name in $DWS_C_FIXTURES; do fixtures+=("$root/tests/fixtures/$name"); done
else
    for dir in "$root"/tests/fixtures/*/; do
        dir="${dir%/}"
        [[ -f "$dir/model.dws" && -f "$dir/case.bin" ]] && fixtures+=("$dir")
    done
fi
((${#fixtures[@]} > 0)) || die "no fixtures with model.dws and case.bin under tests/fixtures"
bad="$root/tests/fixtures/clf_nobias_sab"
[[ -f "$bad/model.dws" ]] || bad="${fixtures[0]}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

total_pass=0
total_fail=0
for kind in static shared; do
    echo "== running test_dws_$kind over ${#fixtures[@]} fixtures and the bad-input cases"
    out="$build/test_dws_$kind.log"
    "$build/test_dws_$kind" "$kind" "$bad" "${fixtures[@]}" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    summary="$(grep -E "^$kind: [0-9]+ passed, [0-9]+ failed$" "$out" | tail -n 1)"
    if [[ -z "$summary" ]]; then
        echo "FAIL $kind: test_dws_$kind exited with status $rc before its summary"
        total_fail=$((total_fail + 1))
        continue
    fi
    p="$(sed -E 's/^[a-z]+: ([0-9]+) passed, ([0-9]+) failed$/\1/' <<<"$summary")"
    f="$(sed -E 's/^[a-z]+: ([0-9]+) passed, ([0-9]+) failed$/\2/' <<<"$summary")"
    if ((rc != 0 && f == 0)); then
        echo "FAIL $kind: test_dws_$kind exited with status $rc"
        f=1
    fi
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
done

echo "$total_pass passed, $total_fail failed"
((total_fail == 0))
