#!/usr/bin/env bash
# Builds llama.cpp's command-line tools from the source PyPI's `llama-cpp-python` vendors, once,
# into a cache outside the repository, and prints the directory holding them:
#
#   bin=$(scripts/llamacpp-tools.sh)           # llama-simple, llama-cli, llama-bench, ...
#   src=$(scripts/llamacpp-tools.sh --source)  # the vendored llama.cpp tree (convert_hf_to_gguf.py,
#                                              # gguf-py, models/ggml-vocab-*.gguf)
#
# The sdist is fetched from PyPI's simple index and checked against its pinned SHA-256; cmake and
# ninja come from PyPI wheels into a venv next to it. The build is keyed by the version and the
# cmake flags ($LLAMACPP_CMAKE_ARGS; default: the machine's own instruction sets without AMX,
# whose int8 path crashes on q8_0 on the Sapphire Rapids machines we use). Exit status 3 with a
# printed reason when PyPI cannot be reached and nothing is cached: callers skip on it.
set -euo pipefail
VERSION="0.3.36"
SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
URL="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$VERSION.tar.gz"
CACHE="${SWITCHYARD_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/peers}"
TOOLS=(llama-simple llama-cli llama-bench llama-batched-bench llama-server llama-tokenize llama-embedding
       llama-quantize test-tokenizer-0)
log() { echo "llamacpp-tools: $*" >&2; }

mkdir -p "$CACHE"
src="$CACHE/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -f "$src/CMakeLists.txt" ]; then
  tarball="$CACHE/llama_cpp_python-$VERSION.tar.gz"
  if [ ! -f "$tarball" ]; then
    log "fetching llama-cpp-python $VERSION (the sdist vendors llama.cpp) from PyPI"
    if ! curl -fsSL --retry 3 -o "$tarball.part" "$URL"; then
      rm -f "$tarball.part"
      echo "SKIPPED: PyPI is unreachable, so llama-cpp-python==$VERSION (llama.cpp) cannot be fetched" >&2
      exit 3
    fi
    mv "$tarball.part" "$tarball"
  fi
  echo "$SHA256  $tarball" | sha256sum -c --quiet - || { log "checksum mismatch for $tarball"; rm -f "$tarball"; exit 1; }
  tar -xzf "$tarball" -C "$CACHE"
fi
if [ "${1:-}" = "--source" ]; then echo "$src"; exit 0; fi

flags="${LLAMACPP_CMAKE_ARGS:--DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF}"
key=$(echo "$VERSION $flags $(grep -m1 -o 'flags.*' /proc/cpuinfo | md5sum)" | sha256sum | cut -c1-12)
build="$CACHE/llama.cpp-$VERSION-$key"
if [ ! -f "$build/.complete" ]; then
  venv="$CACHE/cmake-venv"
  if [ ! -x "$venv/bin/cmake" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "cmake==4.1.0" "ninja==1.13.0" >&2 \
      || { echo "SKIPPED: PyPI is unreachable, so cmake cannot be installed to build llama.cpp" >&2; exit 3; }
  fi
  log "building ${TOOLS[*]} with $flags into $build (a few minutes)"
  rm -rf "$build"
  # shellcheck disable=SC2086
  "$venv/bin/cmake" -S "$src" -B "$build" -G Ninja -DCMAKE_MAKE_PROGRAM="$venv/bin/ninja" \
    -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=ON -DLLAMA_BUILD_EXAMPLES=ON \
    -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF $flags >&2
  "$venv/bin/cmake" --build "$build" -j "$(nproc)" --target "${TOOLS[@]}" >&2
  touch "$build/.complete"
fi
echo "$build/bin"
