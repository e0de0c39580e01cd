# Shared by scripts/compare-llamacpp*.sh (sourced, not run): the release binary, the AVX2-only
# restriction, the machine line every table is read against, and the GGUF files to compare.
#
# Needs $repo and $WORK; sets $sy.

(cd "$repo" && cargo build --release -q --bin switchyard)
sy="$repo/target/release/switchyard"

# Both engines restricted to AVX2 + FMA + F16C (what an AVX2-only CPU runs): llama.cpp built without
# any AVX-512 (its own build, cached apart by llamacpp-tools.sh), Switchyard's kernels capped.
restrict_to_avx2() {
  export LLAMACPP_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  export SWITCHYARD_CPU_KERNELS=avx2
}

# The CPU and the SIMD flags that decide which kernels run, on stderr.
machine_line() {
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -m1 -o 'flags.*' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512_vnni|avx512vnni|amx_int8)$' | tr '\n' ' ')" >&2
}

# gguf_files MODEL TYPES [LABEL_SUFFIX]: fills `files` and `labels`. A GGUF file is measured as it
# is (labelled by its name, less LABEL_SUFFIX); a built-in model is written once per type by
# `switchyard quantize` into $WORK (labelled by the type).
gguf_files() {
  local model=$1 types=$2 suffix=${3:-} safe t f
  files=()
  labels=()
  if [[ "$model" == *.gguf ]]; then
    files+=("$model"); labels+=("$(basename "$model" $suffix)")
  else
    safe="$(echo "$model" | tr ':/' '__')"
    for t in ${types//,/ }; do
      f="$WORK/$safe-$t.gguf"
      [ -f "$f" ] || "$sy" quantize --model "$model" --to "$t" --out "$f" >&2
      files+=("$f"); labels+=("$t")
    done
  fi
}
