#!/usr/bin/env bash
# llama.cpp from the source PyPI's `llama-cpp-python` sdist vendors, built once into a cache
# outside the repository. Prints a path:
#
#   scripts/llamacpp-tools.sh --source        # the vendored llama.cpp tree (convert_hf_to_gguf.py,
#                                             # gguf-py, models/ggml-vocab-*.gguf with test vectors)
#   scripts/llamacpp-tools.sh --lib           # the directory of libllama.so (the shared library
#                                             # llama-cpp-python's bindings load: LLAMA_CPP_LIB_PATH)
#   scripts/llamacpp-tools.sh [TOOL ...]      # the directory of the tools built (default: llama-bench,
#                                             # llama-batched-bench, llama-server, llama-simple,
#                                             # llama-cli, llama-tokenize, llama-embedding)
#   scripts/llamacpp-tools.sh --bindings      # a directory to put on PYTHONPATH for `import llama_cpp`
#
# The sdist comes from PyPI's files host and is checked against its pinned SHA-256; cmake and ninja
# come from PyPI wheels into a venv next to it. The build is keyed by the version, the cmake flags
# ($LLAMACPP_CMAKE_ARGS; default: this CPU's instruction sets without AMX, whose path crashes on
# the Sapphire Rapids machines we use) and the CPU's flags; targets are built as asked
# (ninja builds nothing twice). Exit status 3 with a printed reason when PyPI cannot be reached and
# nothing is cached: callers skip on it.
set -euo pipefail
VERSION="0.3.36"
SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
URL="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$VERSION.tar.gz"
CACHE="${SWITCHYARD_PEERS:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/peers}"
DEFAULT_TOOLS=(llama-bench llama-batched-bench llama-server llama-simple llama-cli llama-tokenize
               llama-embedding)
log() { echo "llamacpp-tools: $*" >&2; }

mkdir -p "$CACHE"
root="$CACHE/llama_cpp_python-$VERSION"
src="$root/vendor/llama.cpp"
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
case "${1:-}" in
  --source) echo "$src"; exit 0 ;;
  --bindings) echo "$root"; exit 0 ;;
esac

flags="${LLAMACPP_CMAKE_ARGS:--DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF}"
# GGML_AMX_*=OFF alone is not enough: -march=native on a CPU with AMX defines __AMX_INT8__ and
# ggml compiles its AMX path anyway (seen crashing in ldtilecfg). Explicit -mno-amx-* win over
# -march=native whatever their order; they reach the compiler through CFLAGS/CXXFLAGS.
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
key=$(echo "$VERSION shared $flags $no_amx $(grep -m1 -o 'flags.*' /proc/cpuinfo | md5sum)" | sha256sum | cut -c1-12)
build="$CACHE/llama.cpp-$VERSION-$key"
if [ "${1:-}" = "--lib" ]; then
  targets=(llama)
elif [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=("${DEFAULT_TOOLS[@]}")
fi
venv="$CACHE/cmake-venv"
if [ ! -x "$venv/bin/cmake" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "cmake==4.1.0" "ninja==1.13.0" >&2 \
    || { echo "SKIPPED: PyPI is unreachable, so cmake cannot be installed to build llama.cpp" >&2; exit 3; }
fi
if [ ! -f "$build/build.ninja" ]; then
  log "configuring llama.cpp $VERSION with $flags in $build"
  rm -rf "$build"
  # shellcheck disable=SC2086
  CFLAGS="$no_amx" CXXFLAGS="$no_amx" "$venv/bin/cmake" -S "$src" -B "$build" -G Ninja -DCMAKE_MAKE_PROGRAM="$venv/bin/ninja" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=ON $flags >&2
fi
log "building ${targets[*]} (nothing twice)"
"$venv/bin/cmake" --build "$build" -j "$(nproc)" --target "${targets[@]}" >&2
echo "$build/bin"
