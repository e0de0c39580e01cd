#!/usr/bin/env bash
# Verifies Switchyard's HLO export against XLA itself: writes every conformance case and the
# prefill/decode executables of every fixture architecture (two KV buckets) as HLO modules with
# inputs and the CPU device's outputs, then executes each module with XLA's CPU backend
# (scripts/verify_hlo.py) and compares.
#
#   scripts/verify_hlo.sh [BUNDLE_DIR]
#
# jax/jaxlib (pinned below) are installed once into a virtual environment outside the repository
# ($SWITCHYARD_JAX_VENV, default ~/.cache/switchyard/jax-venv). When the package index cannot be
# reached and no such environment exists, the check is skipped with the reason (exit 0).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
JAX_VERSION="0.10.2"
VENV="${SWITCHYARD_JAX_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/jax-venv}"
bundle="${1:-$(mktemp -d)}"

if ! "$VENV/bin/python" -c "import jax, jaxlib; assert jax.__version__ == '$JAX_VERSION'" 2>/dev/null; then
  echo "installing jax==$JAX_VERSION jaxlib==$JAX_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  if ! "$VENV/bin/pip" install -q "jax==$JAX_VERSION" "jaxlib==$JAX_VERSION" numpy >&2; then
    if ! "$VENV/bin/pip" download -q --no-deps -d "$(mktemp -d)" "jax==$JAX_VERSION" >/dev/null 2>&1; then
      echo "SKIPPED: the Python package index is unreachable, so jax==$JAX_VERSION cannot be installed to verify the HLO export" >&2
      exit 0
    fi
    echo "installing jax failed although the package index is reachable" >&2
    exit 1
  fi
fi

(cd "$repo" && cargo run --quiet --example hlo_verification_bundle -- "$bundle")
"$VENV/bin/python" "$here/verify_hlo.py" "$bundle" | grep -v '^ok '
