#!/usr/bin/env bash
# Builds the dws-embedded self-test firmware for thumbv7em-none-eabihf, runs it
# on an emulated STM32F405 (QEMU netduinoplus2) and reports:
#
#   N passed, M failed                      (the reference cases the firmware carries)
#   flash: .. of .. bytes (..%, headroom ..%), RAM: .. of .. bytes (..)
#   instructions per inference: X (paper_default int8, ..)   (the benchmark first,
#   instructions per inference: X (<case> <f32|int8>, ..)     then every other case)
#
#   run-qemu.sh --profile[=FIXTURE[.int8|.16x8]]
#
# also prints where the instructions of a quantized case go (FIXTURE's int8
# case, or its 16x8 case; default the benchmark): the same run with the per-PC plugin
# qemu-plugin/pcprof.c, then the per-op table of
# `cargo run -p dws-embedded --example int8-profile` (see README.md).
#
# Exits non-zero if a case fails, the stack outgrows its reserve, the image
# leaves less than 15% of the flash or RAM free, QEMU fails or times out, a
# tool is missing, or the profile does not account for every instruction.
# Environment: CARGO_TARGET_DIR (default dws-embedded/firmware/target),
# QEMU_TIMEOUT (seconds, default 600), DWS_CODE_RESERVE (flash bytes kept for
# code, see firmware/build.rs), DWS_FIXTURES and DWS_BENCH (firmware/build.rs).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FW="$HERE/firmware"
TARGET=thumbv7em-none-eabihf
FLASH_TOTAL=$((1024 * 1024)) # memory.x
RAM_TOTAL=$((192 * 1024))    # memory.x: what QEMU maps; the real part has 128K SRAM + 64K CCM
HEADROOM=15                  # percent of each kept free (HEADROOM_PERCENT in build.rs)
FLASH_LIMIT=$((FLASH_TOTAL * (100 - HEADROOM) / 100))
RAM_LIMIT=$((RAM_TOTAL * (100 - HEADROOM) / 100))
TIMEOUT="${QEMU_TIMEOUT:-600}"

die() {
  echo "run-qemu.sh: $*" >&2
  exit 1
}

PROFILE=""
for arg in "$@"; do
  case "$arg" in
    --profile) PROFILE="${DWS_BENCH:-paper_default}" ;;
    --profile=?*) PROFILE="${arg#--profile=}" ;;
    -h | --help)
      echo "usage: bash dws-embedded/run-qemu.sh [--profile[=FIXTURE]]"
      exit 0
      ;;
    *) die "unknown argument $arg (usage: run-qemu.sh [--profile[=FIXTURE]])" ;;
  esac
done

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
ADDR2LINE=""
if [ -n "$PROFILE" ]; then
  for t in arm-none-eabi-addr2line llvm-addr2line; do
    if command -v "$t" >/dev/null; then ADDR2LINE="$t"; break; fi
  done
  [ -n "$ADDR2LINE" ] || die "--profile needs arm-none-eabi-addr2line: apt-get install -y binutils-arm-none-eabi"
fi

ROOT="$(cd "$HERE/.." && pwd)"
if [ -n "$PROFILE" ]; then
  # FIXTURE, FIXTURE.int8 or FIXTURE.16x8.
  PMODE=int8
  case "$PROFILE" in
    *.16x8) PMODE=16x8 PROFILE="${PROFILE%.16x8}" ;;
    *.int8) PROFILE="${PROFILE%.int8}" ;;
  esac
  blob="$(realpath -m "${DWS_FIXTURES:-$ROOT/tests/fixtures}")/$PROFILE/model.$PMODE.dws"
  [ -f "$blob" ] || die "--profile=$PROFILE.$PMODE: no $PMODE blob $blob"
fi
# The host tool of --profile builds with the workspace's target folder.
HOST_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
TARGET_DIR="$(realpath -m "${CARGO_TARGET_DIR:-$FW/target}")"
export CARGO_TARGET_DIR="$TARGET_DIR"
ELF="$TARGET_DIR/$TARGET/release/dws-firmware"
WORK="$TARGET_DIR/qemu-run"
mkdir -p "$WORK"

# ---- the QEMU plugin -----------------------------------------------------------
# insn.c counts instructions; pcprof.c (--profile) prints the same counts and
# writes where they went, per PC, to pcprof.txt.
if [ -n "$PROFILE" ]; then PLUGIN_NAME=pcprof; else PLUGIN_NAME=insn; fi
PLUGIN="$WORK/lib$PLUGIN_NAME.so"
echo "== building the QEMU plugin (qemu-plugin/$PLUGIN_NAME.c)"
"$CC" -shared -fPIC -O2 -Wall -Wextra -Werror -I "$HERE/qemu-plugin" \
  -o "$PLUGIN" "$HERE/qemu-plugin/$PLUGIN_NAME.c"

# ---- firmware ------------------------------------------------------------------
# Berkeley sizes of the ELF: text, data, bss.
elf_sizes() {
  if [ -n "$SIZE" ]; then
    "$SIZE" -B "$ELF" | awk 'NR == 2 {print $1, $2, $3}'
  else
    # Totals from the section table: alloc+exec/read-only, alloc+write, nobits.
    readelf -SW "$ELF" | sed 's/^ *\[ *[0-9]*\]//' | awk '
      $3 ~ /^[0-9a-f]+$/ && $6 ~ /A/ {
        size = strtonum("0x" $5)
        if ($2 == "NOBITS") b += size; else if ($6 ~ /W/) d += size; else t += size
      } END {print t + 0, d + 0, b + 0}'
  fi
}

# build.rs carries the paper-default int8 case and as many others as fit the
# flash left after DWS_CODE_RESERVE bytes for code, within 85% of the chip. If
# the code outgrew that reserve (the image is above 85% of the flash, or the
# link overflowed), rebuild with a larger reserve: fewer cases carried.
echo "== building the firmware ($TARGET, release)"
cd "$FW" # .cargo/config.toml here holds the target and the linker scripts
export DWS_CODE_RESERVE="${DWS_CODE_RESERVE:-98304}" # = CODE_RESERVE in build.rs
# The image holds the source paths of a few panic locations: remapped to fixed
# prefixes, its size does not depend on where the checkout or ~/.cargo lies.
# (`--config` arrays add to .cargo/config.toml's rustflags.)
REMAP="target.$TARGET.rustflags=[\"--remap-path-prefix=$ROOT=/dws\", \"--remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo\"]"
for attempt in 1 2 3 4; do
  over=""
  if cargo build --release --config "$REMAP" 2>"$WORK/build.log"; then
    read -r text data bss < <(elf_sizes)
    [ $((text + data)) -le "$FLASH_LIMIT" ] && break
    over=$((text + data - FLASH_LIMIT))
  else
    over=$(grep -o "overflowed by [0-9]* bytes" "$WORK/build.log" | grep -o "[0-9]*" | sort -n | tail -1 || true)
    if [ -n "$over" ]; then over=$((over + FLASH_TOTAL - FLASH_LIMIT)); fi
  fi
  if [ -z "$over" ] || [ "$attempt" = 4 ]; then
    cat "$WORK/build.log" >&2
    die "firmware build failed (or its flash stays above ${FLASH_LIMIT} bytes)"
  fi
  DWS_CODE_RESERVE=$((DWS_CODE_RESERVE + over + 4096))
  echo "   code outgrew its flash reserve by $over bytes: DWS_CODE_RESERVE=$DWS_CODE_RESERVE (fewer cases)"
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
plugin_args="$PLUGIN,mark=0x$addr"
if [ -n "$PROFILE" ]; then plugin_args="$plugin_args,out=$WORK/pcprof.txt"; fi
rc=0
timeout "$TIMEOUT" qemu-system-arm -machine netduinoplus2 -nographic \
  -semihosting-config enable=on,target=native \
  -plugin "$plugin_args" -d plugin -D "$WORK/plugin.log" \
  -kernel "$ELF" >"$WORK/defmt.bin" 2>"$WORK/stderr.txt" </dev/null || rc=$?

# The defmt log (semihosting stdout), decoded.
defmt-print -e "$ELF" stdin <"$WORK/defmt.bin" | tee "$WORK/defmt.txt" || true
# Plain-text lines from the firmware (semihosting stderr) and QEMU itself.
grep -v -E "^[0-9]+ passed, [0-9]+ failed$|^bench model: |^stack: |^inferences: " "$WORK/stderr.txt" >&2 || true

if [ "$rc" = 124 ]; then die "QEMU timed out after ${TIMEOUT}s"; fi
summary=$(grep -E "^[0-9]+ passed, [0-9]+ failed$" "$WORK/stderr.txt" | tail -1 || true)
[ -n "$summary" ] || die "the firmware printed no summary (QEMU exit status $rc)"
passed=${summary%% passed*}
failed=${summary#*, }
failed=${failed%% failed}
grep -q "$summary" "$WORK/defmt.txt" ||
  echo "run-qemu.sh: warning: the decoded defmt log does not show '$summary'" >&2

# ---- sizes ---------------------------------------------------------------------
# Flash: code, constants, blobs and cases (text) and the .data image. RAM: the
# statics (.data, .bss: the arena is there) and the stack reserve the link
# guarantees (the firmware checks its high-water mark against it).
read -r text data bss < <(elf_sizes)
read -r stack stack_reserve < <(sed -n 's/^stack: \([0-9]*\) of \([0-9]*\) bytes$/\1 \2/p' "$WORK/stderr.txt" | tail -1)
[ -n "${stack_reserve:-}" ] || die "the firmware printed no stack figure"
flash=$((text + data))
static=$((data + bss))
ram=$((static + stack_reserve))
# "a.b%" of part/whole (to the nearest tenth), and of the rest.
pct() {
  local t=$((($1 * 1000 + $2 / 2) / $2))
  echo "$((t / 10)).$((t % 10))%"
}
free_pct() { pct $(($2 - $1)) "$2"; }

# ---- instructions per inference --------------------------------------------------
# Every inference is one interval of the plugin; the firmware says, case by
# case, how many it marked ("inferences: NAME KIND N"). One line per case:
# NAME KIND FIRST_INTERVAL INFERENCES MEAN_INSTRUCTIONS.
bench=$(sed -n 's/^bench model: //p' "$WORK/stderr.txt" | tail -1)
awk '
  FNR == NR { if ($1 == "inferences:") { name[++c] = $2 " " $3; n[c] = $4 } next }
  /^insn: interval/ { v[++k] = $4 }
  END {
    j = 0
    for (i = 1; i <= c; i++) {
      s = 0
      for (m = 0; m < n[i]; m++) s += v[++j]
      printf "%s %d %d %.0f\n", name[i], j - n[i] + 1, n[i], n[i] ? int(s / n[i]) : 0
    }
    if (j != k) printf "mismatch: %d intervals marked, %d counted\n", j, k
  }' "$WORK/stderr.txt" "$WORK/plugin.log" >"$WORK/cases.txt"

echo
echo "$passed passed, $failed failed"
echo "flash: $flash of $FLASH_TOTAL bytes ($(pct "$flash" "$FLASH_TOTAL"), headroom $(free_pct "$flash" "$FLASH_TOTAL")), RAM: $ram of $RAM_TOTAL bytes ($(pct "$ram" "$RAM_TOTAL"), headroom $(free_pct "$ram" "$RAM_TOTAL"); $static static + $stack_reserve stack, high water $stack)"
counts_ok=1
if grep -q "^mismatch: " "$WORK/cases.txt"; then
  sed -n "s/^mismatch: /run-qemu.sh: the firmware's marks and the plugin's intervals disagree: /p" "$WORK/cases.txt" >&2
  counts_ok=0
fi
# The benchmark first, in the spelling scripts look for, then the other cases.
if ! awk -v bench="$bench" '
  $1 != "mismatch:" && $4 > 0 {
    line = sprintf("instructions per inference: %s (%s %s, mean of %d inferences)", $5, $1, $2, $4)
    if ($1 " " $2 == bench) { print line; found = 1 } else rest = rest line "\n"
  }
  END { printf "%s", rest; exit !found }' "$WORK/cases.txt"; then
  echo "instructions per inference: unknown for $bench (the plugin saw no marks)" >&2
  counts_ok=0
fi

# ---- the per-op profile (--profile) ----------------------------------------------
if [ -n "$PROFILE" ]; then
  read -r first n < <(awk -v c="$PROFILE $PMODE" '$1 " " $2 == c {print $3, $4}' "$WORK/cases.txt") || true
  [ -n "${n:-}" ] && [ "$n" -gt 0 ] ||
    die "--profile=$PROFILE.$PMODE: the firmware ran no $PMODE case $PROFILE (it ran: $(awk -v m="$PMODE" '$2 == m {printf "%s%s", s, $1; s = " "}' "$WORK/cases.txt"))"
  echo
  echo "== per-op profile of $PROFILE $PMODE (cargo run -p dws-embedded --example int8-profile)"
  (cd "$ROOT" && CARGO_TARGET_DIR="$HOST_TARGET_DIR" cargo run -q -p dws-embedded --example int8-profile -- \
    --blob "$blob" --elf "$ELF" --profile "$WORK/pcprof.txt" --intervals "$first-$((first + n - 1))" \
    --name "$PROFILE $PMODE" --addr2line "$ADDR2LINE") | tee "$WORK/profile.md" ||
    die "the per-op profile failed"
fi

[ $((passed + failed)) -ge 5 ] || die "the firmware carries only $((passed + failed)) cases (want >= 5)"
[ "$flash" -le "$FLASH_LIMIT" ] || die "flash above $FLASH_LIMIT bytes (${HEADROOM}% headroom)"
[ "$ram" -le "$RAM_LIMIT" ] || die "RAM above $RAM_LIMIT bytes (${HEADROOM}% headroom)"
[ "$stack" -le "$stack_reserve" ] || die "the stack ($stack bytes) outgrew its reserve ($stack_reserve, _stack_reserve in firmware/memory.x)"
[ "$failed" = 0 ] || exit 1
[ "$rc" = 0 ] || die "QEMU exit status $rc"
[ "$counts_ok" = 1 ] || die "the instruction counts are incomplete (above)"
