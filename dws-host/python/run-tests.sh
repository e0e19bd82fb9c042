#!/usr/bin/env bash
# Builds the `dws` Python package (PyO3 + maturin) as a wheel, installs it into a
# virtual environment and runs its pytest suite: the Python API over the reference
# fixtures and dws.ray on a local two-CPU Ray cluster.
#
#   dws-host/python/run-tests.sh [pytest args...]
#
# Environment:
#   DWS_PY_VENV   the virtual environment to create or reuse (default: .venv here)
#   PYTHON        the interpreter that creates it (default: python3, >= 3.9)
#   CARGO_TARGET_DIR  as usual; default ~/.cache/dws-python/target, outside the
#                 checkout, so that CI's fresh clones reuse the compiled dependencies
#
# Needs python3 with venv + pip, a Rust toolchain, and PyPI. Exits non-zero when the
# build fails, a test fails, or no test ran (pytest's exit code 5).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
start=$SECONDS

venv="${DWS_PY_VENV:-$here/.venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dws-python/target}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv"
  if ! "$python" -m venv "$venv"; then
    echo "error: '$python -m venv' failed (on Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
fi
py="$venv/bin/python"

echo "== installing build and test requirements"
# Already-satisfied requirements cost no download: a warm venv takes seconds.
"$py" -m pip install -q --disable-pip-version-check \
  'maturin>=1.7,<2' 'numpy>=1.21' pytest 'ray[data]>=2.9' pyarrow
echo "requirements ready after $((SECONDS - start)) s"

echo "== building the wheel (maturin build --release)"
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
"$venv/bin/maturin" build --release --locked --quiet -i "$py" -o "$wheels"
"$py" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$wheels"/*.whl
echo "wheel built and installed after $((SECONDS - start)) s: $(basename "$wheels"/*.whl)"

echo "== pytest"
# Ray must not be skipped here: a missing or broken Ray is a failure in CI.
export DWS_REQUIRE_RAY=1
set +e
# Run from the tests' folder's parent so `import dws` is the installed wheel.
"$py" -m pytest -p no:cacheprovider -q -r fEs "$@" tests
rc=$?
set -e
case $rc in
  0) ;;
  5) echo "error: pytest collected no tests" >&2; rc=1 ;;
  *) echo "error: pytest failed (exit code $rc)" >&2 ;;
esac
echo "run-tests.sh: $((SECONDS - start)) s in all"
exit $rc
