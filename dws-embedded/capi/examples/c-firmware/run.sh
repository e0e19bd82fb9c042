#!/usr/bin/env bash
# Builds the C firmware example against the thumbv7em-none-eabihf libdws.a and
# runs it under QEMU (netduinoplus2, STM32F405) with semihosting.
#
# Needs: cargo + rustup target thumbv7em-none-eabihf, and Debian's
#   apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
# Environment: CARGO_TARGET_DIR (honoured), QEMU_TIMEOUT (seconds, default 120).
# Prints the firmware's lines and its closing "N passed, M failed"; exit status
# 0 only when the firmware exited 0 and reported no failure.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"
target=thumbv7em-none-eabihf
timeout_s="${QEMU_TIMEOUT:-120}"

die() {
    echo "c-firmware/run.sh: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found; $2"
}
need cargo "install Rust with rustup (https://rustup.rs)"
need arm-none-eabi-gcc "apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi"
need qemu-system-arm "apt-get install -y qemu-system-arm"
need timeout "install coreutils"
if command -v rustup >/dev/null 2>&1; then
    installed="$(rustup target list --installed 2>/dev/null)"
    grep -qx "$target" <<<"$installed" ||
        die "Rust target $target is not installed; run: rustup target add $target"
fi

mcu=(-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16)
[[ "$(arm-none-eabi-gcc "${mcu[@]}" -print-file-name=nano.specs)" == /* ]] ||
    die "newlib for arm-none-eabi not found; apt-get install -y libnewlib-arm-none-eabi"

cd "$root" || die "cannot enter $root"
echo "== building libdws for $target"
cargo build -p dws-capi --release --target "$target" >&2 ||
    die "cargo build -p dws-capi --release --target $target failed"

target_dir="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[[ -n "$target_dir" ]] || target_dir="${CARGO_TARGET_DIR:-$root/target}"
lib="$target_dir/$target/release/libdws.a"
[[ -f "$lib" ]] || die "$lib not found after the build"

build="$target_dir/c-firmware"
mkdir -p "$build" || die "cannot create $build"
elf="$build/fw.elf"

# newlib's objects lack .note.GNU-stack; newer binutils warn about it (harmless here).
quiet_ld=()
ld_help="$(arm-none-eabi-ld --help 2>/dev/null)"
if grep -q -- --no-warn-execstack <<<"$ld_help"; then
    quiet_ld=(-Wl,--no-warn-execstack)
fi

echo "== compiling and linking $elf"
arm-none-eabi-gcc "${mcu[@]}" -std=c99 -Wall -Wextra -Werror -O2 -g \
    -ffunction-sections -fdata-sections \
    -I "$root/dws-embedded/capi/include" \
    -Wa,-I"$root/tests/fixtures" \
    --specs=nano.specs --specs=rdimon.specs -nostartfiles \
    -T "$here/link.ld" -Wl,--gc-sections -Wl,-Map="$build/fw.map" "${quiet_ld[@]}" \
    -o "$elf" \
    "$here/startup.S" "$here/fixtures.S" "$here/main.c" "$lib" -lm ||
    die "building the firmware failed"
if command -v arm-none-eabi-size >/dev/null 2>&1; then
    arm-none-eabi-size "$elf"
fi

echo "== running under qemu-system-arm -machine netduinoplus2 (timeout ${timeout_s}s)"
log="$build/fw.log"
timeout "$timeout_s" qemu-system-arm -machine netduinoplus2 -nographic \
    -semihosting-config enable=on,target=native -kernel "$elf" </dev/null 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

if ((rc == 124)); then
    echo "c-firmware/run.sh: QEMU did not finish within ${timeout_s}s" >&2
    exit 1
fi
summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 | tr -d '\r')"
if [[ -z "$summary" ]]; then
    echo "c-firmware/run.sh: the firmware printed no summary (QEMU exit status $rc)" >&2
    exit 1
fi
if ((rc != 0)) || [[ ! "$summary" =~ ^[0-9]+\ passed,\ 0\ failed$ ]]; then
    echo "c-firmware/run.sh: firmware failed (QEMU exit status $rc: $summary)" >&2
    exit 1
fi
