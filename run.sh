#!/usr/bin/env bash
# Sets up .venv on first use (Python 3.11: the package for the demo and the commands; the test
# tools, JAX and the PyTorch reference for the tests and lint), then runs:
#   bash run.sh demo [ARGS]     the end-to-end demo on the built-in synthetic dataset
#   bash run.sh test [ARGS]     the test suite on the TensorFlow and the JAX backend
#   bash run.sh lint            ruff check of the package, the tests and the benchmarks
#   bash run.sh maskformer ...  any maskformer command
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=${MASKFORMER_VENV:-.venv}
hash=$(cat pyproject.toml | sha1sum | cut -c1-12)

# setup LEVEL: "base" is the package and what it needs to run (the demo, any command); "test"
# adds the test tools, JAX and the PyTorch reference. A level is installed once per
# pyproject.toml; "test" includes "base".
setup() {
  if [ -f "$VENV/.installed-test-$hash" ] || { [ "$1" = base ] && [ -f "$VENV/.installed-base-$hash" ]; }; then
    return
  fi
  if [ "$1" = base ]; then
    echo "setting up $VENV (first run: installs TensorFlow and the package)..."
  else
    echo "setting up $VENV (first run: installs TensorFlow, JAX, the test tools and the PyTorch reference)..."
  fi
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  if [ "$1" = base ]; then
    "$VENV/bin/python" -m pip install -q -e .
  else
    "$VENV/bin/python" -m pip install -q -e ".[test,reference]"
    # The COCO reference PQ implementation used by the tests; its metadata pins numpy<2, which
    # its evaluation code does not need.
    "$VENV/bin/python" -m pip install -q --no-deps "panopticapi-lite==0.2.0"
  fi
  rm -f "$VENV"/.installed-*
  touch "$VENV/.installed-$1-$hash"
}

# Reference vectors of the original code, where the shared folder is beside the checkout.
if [ -z "${MASKFORMER_REFERENCE_DATA:-}" ] && [ -d ../shared/testdata/official ]; then
  export MASKFORMER_REFERENCE_DATA="$(cd ../shared/testdata/official && pwd)"
fi
export HF_HUB_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=2

what=${1:-}
shift || true
case "$what" in
  demo)
    setup base
    exec "$VENV/bin/maskformer" demo "$@" ;;
  test)
    setup test
    # One pytest worker per core, at most 4 (each holds a TensorFlow or JAX runtime), a test
    # file per worker at a time (pytest-xdist): much of a test's time is single-threaded
    # tracing and compilation.
    workers=${MASKFORMER_TEST_WORKERS:-$("$VENV/bin/python" -c "import os; print(min(os.cpu_count() or 1, 4))")}
    parallel=(-n "$workers" --dist loadfile --durations=10)
    # The slow (full-size) tests run in workers of their own: a worker's runtime keeps what
    # every earlier test compiled, and a full-size test on top of that can exhaust memory.
    # With test paths given, one of the two may select nothing: pytest's 5, "no test ran", is
    # fine then; without, it fails as any other error.
    for marker in "not slow" "slow"; do
      echo "== KERAS_BACKEND=tensorflow (tests marked: $marker)"
      KERAS_BACKEND=tensorflow "$VENV/bin/python" -m pytest -q "${parallel[@]}" -m "$marker" "$@" \
        || { rc=$?; [ "$rc" -eq 5 ] && [ $# -gt 0 ] || exit "$rc"; }
    done
    echo "== KERAS_BACKEND=jax (the tests of Keras code, slow ones excepted)"
    KERAS_BACKEND=jax "$VENV/bin/python" -m pytest -q "${parallel[@]}" \
      -m "not slow and not backend_independent" "$@"
    ;;
  lint)
    setup test
    exec "$VENV/bin/ruff" check maskformer tests benchmarks ;;
  maskformer)
    setup base
    exec "$VENV/bin/maskformer" "$@" ;;
  *)
    echo "usage: bash run.sh {demo|test|lint|maskformer} [ARGS]" >&2
    exit 2 ;;
esac
