#!/usr/bin/env bash
# Smoke test of `run-qemu.sh --profile` on one small quantized case (CI): the run
# passes, the per-op table prints, and it accounts for every instruction of
# the case's intervals, which are the instructions per inference the run
# reports for that case.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# A small set attention classifier in 16x8 (the int8 case the firmware always
# carries is the paper default, which takes longer to profile).
CASE="${1:-clf_one_feature_layer_sab.16x8}"
NAME="${CASE%.*} ${CASE##*.}"
[ "$NAME" != "$CASE $CASE" ] || NAME="$CASE int8"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

fail() {
  echo "test-profile.sh: $*" >&2
  exit 1
}

bash "$HERE/run-qemu.sh" --profile="$CASE" >"$out" 2>&1 || {
  cat "$out" >&2
  fail "run-qemu.sh --profile=$CASE failed"
}

# The table: its header, op rows with a work column, the total.
grep -q "^| op | M instructions | share | work per inference | instructions per unit |$" "$out" ||
  fail "no per-op table in the output"
rows=$(grep -c "^| [a-z].* | [0-9.]* | [0-9.]*% |" "$out" || true)
[ "$rows" -ge 8 ] || fail "the table has $rows op rows (want >= 8)"
grep -q "^| linear dot products .* MACs | [0-9.]* |$" "$out" || fail "no linear row with its MACs"
grep -q "^| total | " "$out" || fail "no total row"

# Every instruction of the intervals accounted for...
read -r counted of < <(sed -n 's/^accounted for: \([0-9,]*\) of the \([0-9,]*\) instructions.*/\1 \2/p' "$out" | tr -d ,)
[ -n "${of:-}" ] && [ "$counted" = "$of" ] && [ "$of" -gt 0 ] ||
  fail "the table does not account for the intervals' instructions (${counted:-?} of ${of:-?})"
# ... and they are the ones the run reports for the case.
per_table=$(sed -n "s/^per-op profile of $NAME: \([0-9,]*\) instructions per inference.*/\1/p" "$out" | tr -d ,)
per_run=$(sed -n "s/^instructions per inference: \([0-9]*\) ($NAME, .*/\1/p" "$out")
[ -n "$per_table" ] && [ -n "$per_run" ] || fail "missing the instructions per inference of $NAME"
# The table rounds the mean, the run truncates it.
[ $((per_table - per_run)) -ge 0 ] && [ $((per_table - per_run)) -le 1 ] ||
  fail "the table's $per_table instructions per inference differ from the run's $per_run"

echo "test-profile.sh: ok ($NAME: $rows table rows, $of instructions in its intervals, $per_run per inference)"
