#!/usr/bin/env bash
# A Python environment for the llama.cpp checks, outside the repository: numpy, llama.cpp's own
# gguf-py (from the sdist scripts/llamacpp-tools.sh fetches) and what llama-cpp-python's bindings
# import. Prints the interpreter's path. Exit status 3 with the reason when PyPI is unreachable and
# nothing is cached.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${SWITCHYARD_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/peers}"
PINS=(numpy==2.4.6 Jinja2==3.1.6 diskcache==5.6.3 typing_extensions==4.16.0 PyYAML==6.0.4
      tqdm==4.70.1 requests==2.34.2)
want=$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-12)
venv="$CACHE/peers-venv-$want"
if [ ! -f "$venv/.complete" ]; then
  src=$("$here/llamacpp-tools.sh" --source)
  rm -rf "$venv"
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install -q "${PINS[@]}" >&2; then
    echo "SKIPPED: PyPI is unreachable, so the Python packages for the llama.cpp checks cannot be installed" >&2
    exit 3
  fi
  "$venv/bin/pip" install -q --no-deps "$src/gguf-py" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
