#!/usr/bin/env bash
# The shipped example end to end on the CPU: convert the DWSNet trained with
# upstream's code on INRs of scikit-learn's 8x8 digits, evaluate the test split,
# and check every prediction against the logits PyTorch computed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/target/digits"
mkdir -p "$out"
command -v cargo >/dev/null || { echo "run.sh: cargo not found (install Rust with rustup)" >&2; exit 1; }

echo "== build dws"
cargo build --release -q -p dws-host --manifest-path "$root/Cargo.toml"
dws="${CARGO_TARGET_DIR:-$root/target}/release/dws"

echo "== convert (upstream state_dict + config + dataset statistics -> blob)"
"$dws" convert "$here/model.pt" --config "$here/config.json" \
  --statistics "$here/statistics.pth" -o "$out/digits.dws"
"$dws" inspect "$out/digits.dws"

echo "== evaluate the test split"
"$dws" eval "$out/digits.dws" "$here/splits_test.json" --split test \
  -o "$out/predictions.csv"

echo "== compare with PyTorch's committed test logits"
python3 - "$here/torch_test_logits.csv" "$out/predictions.csv" <<'PY'
import csv, sys
torch_rows = {r["path"]: r for r in csv.DictReader(open(sys.argv[1]))}
ours = list(csv.DictReader(open(sys.argv[2])))
same = sum(r["predicted"] == torch_rows[r["path"]]["predicted"] for r in ours)
worst = max(abs(float(r[k]) - float(torch_rows[r["path"]][k]))
            for r in ours for k in r if k.startswith("logit_"))
print(f"predictions identical to PyTorch: {same}/{len(ours)} (of {len(torch_rows)} in PyTorch's file); "
      f"max |logit difference| {worst:.2e}")
sys.exit(0 if same == len(ours) == len(torch_rows) else 1)
PY
