#!/usr/bin/env bash
# Builds the dws-embedded self-test firmware for thumbv7em-none-eabihf, runs it
# on an emulated STM32F405 (QEMU netduinoplus2) and reports:
#
#   N passed, M failed                      (the reference cases the firmware carries)
#   flash: .. bytes of .., RAM: .. bytes of ..
#   instructions per inference: X           (the largest carried model)
#
# Exits non-zero if a case fails, QEMU fails or times out, or a tool is missing.
# Environment: CARGO_TARGET_DIR (default dws-embedded/firmware/target),
# QEMU_TIMEOUT (seconds, default 600), DWS_CODE_RESERVE (flash bytes kept for
# code, see firmware/build.rs).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FW="$HERE/firmware"
TARGET=thumbv7em-none-eabihf
FLASH_TOTAL=$((1024 * 1024)) # memory.x
RAM_TOTAL=$((128 * 1024))
TIMEOUT="${QEMU_TIMEOUT:-600}"

die() {
  echo "run-qemu.sh: $*" >&2
  exit 1
}

# ---- tools -------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
command -v qemu-system-arm >/dev/null ||
  die "qemu-system-arm not found: apt-get install -y qemu-system-arm"
if command -v rustup >/dev/null; then
  rustup target list --installed | grep -x "$TARGET" >/dev/null ||
    die "Rust target $TARGET missing: rustup target add $TARGET"
else
  [ -d "$(rustc --print sysroot)/lib/rustlib/$TARGET" ] ||
    die "Rust target $TARGET missing (no rustup: install the rust-std for $TARGET)"
fi
command -v defmt-print >/dev/null ||
  die "defmt-print not found: cargo install defmt-print --locked"
CC="${CC:-cc}"
command -v "$CC" >/dev/null || die "no C compiler ($CC) for the QEMU plugin: apt-get install -y gcc"
SIZE=""
for t in arm-none-eabi-size rust-size llvm-size; do
  if command -v "$t" >/dev/null; then SIZE="$t"; break; fi
done
[ -n "$SIZE" ] || command -v readelf >/dev/null ||
  die "no size tool: apt-get install -y binutils-arm-none-eabi (or binutils for readelf)"
NM=""
for t in arm-none-eabi-nm llvm-nm rust-nm; do
  if command -v "$t" >/dev/null; then NM="$t"; break; fi
done
[ -n "$NM" ] || command -v readelf >/dev/null ||
  die "no symbol tool: apt-get install -y binutils-arm-none-eabi (or binutils for readelf)"

TARGET_DIR="$(realpath -m "${CARGO_TARGET_DIR:-$FW/target}")"
export CARGO_TARGET_DIR="$TARGET_DIR"
ELF="$TARGET_DIR/$TARGET/release/dws-firmware"
WORK="$TARGET_DIR/qemu-run"
mkdir -p "$WORK"

# ---- the QEMU plugin -----------------------------------------------------------
PLUGIN="$WORK/libinsn.so"
echo "== building the instruction-count plugin (qemu-plugin/insn.c)"
"$CC" -shared -fPIC -O2 -Wall -Wextra -Werror -I "$HERE/qemu-plugin" \
  -o "$PLUGIN" "$HERE/qemu-plugin/insn.c"

# ---- firmware ------------------------------------------------------------------
# build.rs takes as many fixtures as the flash allows after DWS_CODE_RESERVE
# bytes for code; if the code outgrew that, the link reports the overflow and
# we retry with a larger reserve (fewer cases carried).
echo "== building the firmware ($TARGET, release)"
cd "$FW" # .cargo/config.toml here holds the target and the linker scripts
export DWS_CODE_RESERVE="${DWS_CODE_RESERVE:-73728}" # = CODE_RESERVE in build.rs
for attempt in 1 2 3 4; do
  if cargo build --release 2>"$WORK/build.log"; then
    break
  fi
  over=$(grep -o "overflowed by [0-9]* bytes" "$WORK/build.log" | grep -o "[0-9]*" | sort -n | tail -1 || true)
  if [ -z "$over" ] || [ "$attempt" = 4 ]; then
    cat "$WORK/build.log" >&2
    die "firmware build failed"
  fi
  DWS_CODE_RESERVE=$((DWS_CODE_RESERVE + over + 4096))
  echo "   flash overflowed by $over bytes: DWS_CODE_RESERVE=$DWS_CODE_RESERVE (fewer cases)"
done
grep -E "^(warning|error)" "$WORK/build.log" >&2 || true

# ---- run -----------------------------------------------------------------------
addr=""
if [ -n "$NM" ]; then
  addr=$("$NM" "$ELF" | awk '/dws_firmware[0-9]*dws_mark/ && !a {a = $1} END {print a}')
else
  addr=$(readelf -sW "$ELF" | awk '/dws_firmware[0-9]*dws_mark/ && !a {a = $2} END {print a}')
fi
[ -n "$addr" ] || die "marker symbol dws_mark not found in $ELF"

echo "== running under qemu-system-arm -machine netduinoplus2 (timeout ${TIMEOUT}s)"
rc=0
timeout "$TIMEOUT" qemu-system-arm -machine netduinoplus2 -nographic \
  -semihosting-config enable=on,target=native \
  -plugin "$PLUGIN,mark=0x$addr" -d plugin -D "$WORK/plugin.log" \
  -kernel "$ELF" >"$WORK/defmt.bin" 2>"$WORK/stderr.txt" </dev/null || rc=$?

# The defmt log (semihosting stdout), decoded.
defmt-print -e "$ELF" stdin <"$WORK/defmt.bin" | tee "$WORK/defmt.txt" || true
# Plain-text lines from the firmware (semihosting stderr) and QEMU itself.
grep -v -E "^[0-9]+ passed, [0-9]+ failed$|^bench model: " "$WORK/stderr.txt" >&2 || true

if [ "$rc" = 124 ]; then die "QEMU timed out after ${TIMEOUT}s"; fi
summary=$(grep -E "^[0-9]+ passed, [0-9]+ failed$" "$WORK/stderr.txt" | tail -1 || true)
[ -n "$summary" ] || die "the firmware printed no summary (QEMU exit status $rc)"
passed=${summary%% passed*}
failed=${summary#*, }
failed=${failed%% failed}
grep -q "$summary" "$WORK/defmt.txt" ||
  echo "run-qemu.sh: warning: the decoded defmt log does not show '$summary'" >&2

# ---- sizes ---------------------------------------------------------------------
if [ -n "$SIZE" ]; then
  read -r text data bss < <("$SIZE" -B "$ELF" | awk 'NR == 2 {print $1, $2, $3}')
else
  # Berkeley totals from the section table: alloc+exec/read-only, alloc+write, nobits.
  read -r text data bss < <(readelf -SW "$ELF" | sed 's/^ *\[ *[0-9]*\]//' | awk '
    $3 ~ /^[0-9a-f]+$/ && $6 ~ /A/ {
      size = strtonum("0x" $5)
      if ($2 == "NOBITS") b += size; else if ($6 ~ /W/) d += size; else t += size
    } END {print t + 0, d + 0, b + 0}')
fi
flash=$((text + data))
ram=$((data + bss))

# ---- instructions per inference --------------------------------------------------
bench=$(sed -n 's/^bench model: //p' "$WORK/stderr.txt" | tail -1)
read -r count sum < <(awk '/^insn: interval/ {n++; s += $4} END {print n + 0, s + 0}' "$WORK/plugin.log")
count=${count:-0} sum=${sum:-0}

echo
echo "$passed passed, $failed failed"
printf 'flash: %d of %d bytes (%d.%d%%), RAM: %d of %d bytes (%d.%d%%, static; the stack has the rest)\n' \
  "$flash" "$FLASH_TOTAL" $((flash * 100 / FLASH_TOTAL)) $((flash * 1000 / FLASH_TOTAL % 10)) \
  "$ram" "$RAM_TOTAL" $((ram * 100 / RAM_TOTAL)) $((ram * 1000 / RAM_TOTAL % 10))
if [ "$count" -gt 0 ]; then
  echo "instructions per inference: $((sum / count)) ($bench, mean of $count inferences)"
else
  echo "instructions per inference: unknown (the plugin saw no marks)" >&2
  rc=1
fi

[ $((passed + failed)) -ge 5 ] || die "the firmware carries only $((passed + failed)) cases (want >= 5)"
[ "$failed" = 0 ] || exit 1
[ "$rc" = 0 ] || die "QEMU exit status $rc"
