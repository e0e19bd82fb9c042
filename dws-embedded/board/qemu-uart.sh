#!/usr/bin/env bash
# Your model on an emulated board: builds the firmware template with MODEL,
# runs it under QEMU (netduinoplus2, an STM32F405) with its UART on a local TCP
# port, runs `dws serial --verify` over INPUTS, and ends with
#
#   N passed, M failed                   (N + M = inputs; passed: the board's
#                                         output is the host's, bit for bit for
#                                         int8, within the suite's tolerance for f32)
#   instructions per inference: X        (that model on the Cortex-M4, mean)
#
#   bash dws-embedded/board/qemu-uart.sh                       # digits, int8, test split
#   MODEL=model.dws INPUTS=inputs.safetensors bash dws-embedded/board/qemu-uart.sh
#   bash dws-embedded/board/qemu-uart.sh --faults              # then the fault checks
#
# MODEL: any blob that fits the chip (1 MiB of flash with the code, 128 KiB of
#   RAM with a 24 KiB stack); default: examples/digits converted and quantized
#   to int8 with dws (target/digits/digits.int8.dws).
# INPUTS: anything `dws run` takes; default: the digits test split (360 INRs).
# OUT: where the outputs go (default: target/board/outputs.csv for a dataset,
#   .safetensors for a batch).
# --faults: afterwards, against a fresh QEMU: the protocol's fault test
#   (dws-host/tests/serial.rs: garbage, truncated and corrupted frames, wrong
#   lengths, NaN, an input before the hello), then QEMU killed mid-stream
#   under `dws serial` (a clear error, no output file).
# Environment: QEMU_TIMEOUT (seconds, default 900: the longest each step with
#   QEMU may take; QEMU is stopped when the script ends), CARGO_TARGET_DIR.
# Exits non-zero if a tool is missing, the build fails, an output differs or
# a fault check fails.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET=thumbv7em-none-eabihf
TIMEOUT="${QEMU_TIMEOUT:-900}"
FAULTS=0
for arg in "$@"; do
  case "$arg" in
    --faults) FAULTS=1 ;;
    *) echo "usage: [MODEL=blob.dws] [INPUTS=...] [OUT=...] bash $0 [--faults]" >&2; exit 2 ;;
  esac
done

die() {
  echo "qemu-uart.sh: $*" >&2
  exit 1
}

# ---- tools -------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
command -v qemu-system-arm >/dev/null ||
  die "qemu-system-arm not found: apt-get install -y qemu-system-arm"
if command -v rustup >/dev/null; then
  rustup target list --installed | grep -x "$TARGET" >/dev/null ||
    die "Rust target $TARGET missing: rustup target add $TARGET"
fi
CC="${CC:-cc}"
command -v "$CC" >/dev/null || die "no C compiler ($CC) for the QEMU plugin: apt-get install -y gcc"
NM=""
for t in arm-none-eabi-nm llvm-nm rust-nm nm; do
  if command -v "$t" >/dev/null; then NM="$t"; break; fi
done
[ -n "$NM" ] || die "no symbol tool: apt-get install -y binutils-arm-none-eabi"

# Builds below run in other folders: a relative CARGO_TARGET_DIR means this one.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  CARGO_TARGET_DIR="$(realpath -m "$CARGO_TARGET_DIR")"
  export CARGO_TARGET_DIR
fi
HOST_TARGET="$(realpath -m "${CARGO_TARGET_DIR:-$ROOT/target}")"
BOARD_TARGET="$(realpath -m "${CARGO_TARGET_DIR:-$HERE/target}")"
WORK="$HOST_TARGET/board"
mkdir -p "$WORK"
QPID=""
cleanup() {
  if [ -n "$QPID" ]; then kill "$QPID" 2>/dev/null || true; fi
}
trap cleanup EXIT

# ---- dws and the model -------------------------------------------------------------
echo "== building dws (cargo build -p dws-host)"
(cd "$ROOT" && cargo build -q -p dws-host)
DWS="$HOST_TARGET/debug/dws"

if [ -z "${MODEL:-}" ]; then
  digits="$ROOT/examples/digits"
  MODEL="$ROOT/target/digits/digits.int8.dws"
  mkdir -p "$(dirname "$MODEL")"
  # Made once per dws build: convert (as examples/digits/run.sh does), then quantize.
  if [ ! -s "$MODEL" ] || [ "$DWS" -nt "$MODEL" ]; then
    echo "== the digits classifier in int8 (dws convert, dws quantize)"
    "$DWS" convert "$digits/model.pt" --config "$digits/config.json" \
      --statistics "$digits/statistics.pth" -o "${MODEL%.int8.dws}.dws" >/dev/null
    "$DWS" quantize "${MODEL%.int8.dws}.dws" --calibration "$digits/calibration.safetensors" \
      -o "$MODEL" | tail -1
  fi
fi
INPUTS="${INPUTS:-$ROOT/examples/digits/splits_test.json}"
MODEL="$(realpath -e "$MODEL")" || die "MODEL: no such file"
INPUTS="$(realpath -e "$INPUTS")" || die "INPUTS: no such file or folder"
# A batch of tensors gives safetensors, a dataset a predictions CSV (a batch
# saved with torch.save needs OUT=....safetensors).
case "$INPUTS" in
  *.safetensors) OUT="${OUT:-$WORK/outputs.safetensors}" ;;
  *) OUT="${OUT:-$WORK/outputs.csv}" ;;
esac

# ---- firmware and plugin -------------------------------------------------------------
echo "== building the board firmware with MODEL=$MODEL ($TARGET, release, --features qemu)"
(cd "$HERE" && MODEL="$MODEL" CARGO_TARGET_DIR="$BOARD_TARGET" cargo build -q --release --features qemu) ||
  die "the firmware does not build with this MODEL (see above: a region overflow means it does not fit the chip)"
ELF="$BOARD_TARGET/$TARGET/release/dws-board"
addr=$("$NM" "$ELF" | awk '/dws_board.*dws_mark/ && !a {a = $1} END {print a}')
[ -n "$addr" ] || die "marker symbol dws_mark not found in $ELF"
PLUGIN="$WORK/libinsn.so"
"$CC" -shared -fPIC -O2 -Wall -Wextra -Werror -I "$ROOT/dws-embedded/qemu-plugin" \
  -o "$PLUGIN" "$ROOT/dws-embedded/qemu-plugin/insn.c"

# Starts QEMU with USART3 (the third -serial) on a free local port, with the
# instruction counter logging to $1; sets QPID and PORT.
start_qemu() {
  local log="$1"
  rm -f "$log" "$WORK/qemu.err"
  qemu-system-arm -machine netduinoplus2 -nographic -monitor none \
    -serial null -serial null -serial tcp:127.0.0.1:0,server=on,wait=on,nodelay=on \
    -plugin "$PLUGIN,mark=0x$addr" -d plugin -D "$log" \
    -kernel "$ELF" </dev/null >/dev/null 2>"$WORK/qemu.err" &
  QPID=$!
  PORT=""
  for _ in $(seq 300); do
    PORT=$(sed -n 's/.*tcp:127\.0\.0\.1:\([0-9]*\),server.*/\1/p' "$WORK/qemu.err" | tail -1)
    [ -n "$PORT" ] && return 0
    kill -0 "$QPID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$WORK/qemu.err" >&2
  die "QEMU did not open its serial port"
}

stop_qemu() {
  kill "$QPID" 2>/dev/null || true
  wait "$QPID" 2>/dev/null || true
  QPID=""
}

# ---- the run -----------------------------------------------------------------------
echo "== qemu-system-arm -machine netduinoplus2, USART3 on tcp:127.0.0.1 (timeout ${TIMEOUT}s)"
start_qemu "$WORK/plugin.log"
echo "== dws serial --port tcp:127.0.0.1:$PORT $INPUTS -o $OUT --verify $MODEL"
rc=0
timeout "$TIMEOUT" "$DWS" serial --port "tcp:127.0.0.1:$PORT" "$INPUTS" -o "$OUT" \
  --verify "$MODEL" | tee "$WORK/verify.txt" || rc=$?
[ "$rc" != 124 ] || echo "qemu-uart.sh: dws serial ran longer than ${TIMEOUT}s (QEMU_TIMEOUT)" >&2
stop_qemu
summary=$(grep -E "^[0-9]+ passed, [0-9]+ failed$" "$WORK/verify.txt" | tail -1 || true)
[ -n "$summary" ] || die "dws serial gave no verdict (exit status $rc)"
read -r count mean < <(awk '/^insn: interval/ {n++; s += $4} END {printf "%d %.0f\n", n, n ? s / n : 0}' "$WORK/plugin.log")
echo
echo "$summary"
if [ "$count" -gt 0 ]; then
  echo "instructions per inference: $mean ($(basename "$MODEL"), mean of $count inferences)"
else
  echo "instructions per inference: unknown (the plugin saw no inference)" >&2
  rc=1
fi
[ "$rc" = 0 ] || exit "$rc"
[ "$FAULTS" = 1 ] || exit 0

# ---- faults ------------------------------------------------------------------------
echo
echo "== faults: garbage, truncated and corrupted frames, wrong lengths, NaN, an input before the hello"
start_qemu "$WORK/plugin-faults.log"
(cd "$ROOT" && DWS_BOARD="tcp:127.0.0.1:$PORT" DWS_BOARD_MODEL="$MODEL" timeout "$TIMEOUT" \
  cargo test -q -p dws-host --test serial -- --exact faults_get_error_replies_and_the_board_keeps_serving) ||
  die "the fault test failed against the firmware"
stop_qemu

echo "== faults: QEMU killed under dws serial"
start_qemu "$WORK/plugin-kill.log"
killed="$WORK/killed-$$.csv"
rm -f "$killed"
timeout "$TIMEOUT" "$DWS" serial --port "tcp:127.0.0.1:$PORT" "$INPUTS" -o "$killed" \
  --timeout 60 2>"$WORK/killed.err" >/dev/null &
dpid=$!
# Two inferences done, then the board dies.
for _ in $(seq 600); do
  grep -q "^insn: interval 2:" "$WORK/plugin-kill.log" 2>/dev/null && break
  sleep 0.1
done
kill -9 "$QPID" 2>/dev/null || true
wait "$QPID" 2>/dev/null || true
QPID=""
drc=0
wait "$dpid" || drc=$?
cat "$WORK/killed.err"
[ "$drc" != 0 ] || die "dws serial did not fail when QEMU was killed"
grep -Eq "the board stopped answering after [1-9][0-9]* of [0-9]+ inputs.*no output file was written" \
  "$WORK/killed.err" || die "dws serial did not say how many inputs were done"
leftover=$(find "$WORK" -maxdepth 1 -name "*killed-$$.csv*" -print -quit)
[ -z "$leftover" ] || die "dws serial left $leftover behind"
echo "fault checks passed"
