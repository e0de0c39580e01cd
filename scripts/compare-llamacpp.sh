#!/usr/bin/env bash
# Side-by-side CPU comparison of Switchyard and llama.cpp on the very same weights, in one run.
#
#   scripts/compare-llamacpp.sh [--model builtin:smollm2-135m] [--types f32,q8_0]
#                               [-p 128,512] [-n 128] [-r 5] [--threads 2]
#
# For each type: `switchyard quantize` writes the model as GGUF (cached under $WORK), llama.cpp
# (built from PyPI's llama-cpp-python into a venv outside the repo, once) times it through
# scripts/llamacpp_bench.py, `switchyard bench` times the same weights, and a table of medians and
# ratios is printed, with the CPU features llama.cpp was built with. The two engines alternate,
# llama.cpp first for even types and Switchyard first for odd ones, so drift on a shared machine
# does not favour either. Not part of CI.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
model="builtin:smollm2-135m"
types="f32"
prompt="128,512"
gen="128"
reps=5
threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --types) types="$2"; shift 2 ;;
    -p) prompt="$2"; shift 2 ;;
    -n) gen="$2"; shift 2 ;;
    -r) reps="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
WORK="${SWITCHYARD_COMPARE_DIR:-$HOME/.cache/switchyard/compare}"
VENV="${SWITCHYARD_LLAMACPP_VENV:-$HOME/.cache/switchyard/llamacpp-venv}"
LLAMACPP_VERSION="${LLAMACPP_VERSION:-0.3.36}"
mkdir -p "$WORK"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "building llama.cpp (llama-cpp-python==$LLAMACPP_VERSION from PyPI) into $VENV; this takes a few minutes" >&2
  python3 -m venv "$VENV"
  # llama.cpp's AMX int8 path crashes on q8_0 (in ggml_backend_amx_mul_mat) on the Sapphire
  # Rapids machines we benchmark on, so by default it is built with every x86 extension up to
  # AVX-512 VNNI/BF16 and AVX-VNNI but without AMX. LLAMACPP_CMAKE_ARGS overrides the flags.
  default_flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
  default_flags="$default_flags -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON"
  default_flags="$default_flags -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  CMAKE_ARGS="${LLAMACPP_CMAKE_ARGS:-$default_flags}" \
    "$VENV/bin/pip" install -q --no-cache-dir "llama-cpp-python==$LLAMACPP_VERSION" numpy >&2
fi

(cd "$repo" && cargo build --release -q)
sy="$repo/target/release/switchyard"
safe_model="$(echo "$model" | tr ':/' '__')"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads; model $model; -p $prompt -n $gen -r $reps" >&2
echo "$("$VENV/bin/python" -c 'import llama_cpp; print("llama.cpp via llama-cpp-python", llama_cpp.__version__, "|", llama_cpp.llama_print_system_info().decode())'); $("$sy" --version)" >&2

results="$WORK/results-$$.jsonl"
: > "$results"
i=0
for t in ${types//,/ }; do
  gguf="$WORK/$safe_model-$t.gguf"
  [ -f "$gguf" ] || "$sy" quantize --model "$model" --to "$t" --out "$gguf" >&2
  run_llama() {
    "$VENV/bin/python" "$here/llamacpp_bench.py" "$gguf" --threads "$threads" -p "$prompt" -n "$gen" -r "$reps" 2>/dev/null \
      | python3 -c "import json,sys; d=json.load(sys.stdin); d['type']='$t'; d['engine']='llama.cpp'; print(json.dumps(d))" >> "$results"
  }
  run_switchyard() {
    # Switchyard runs the GGUF file itself when it can read it, else the same weights in memory.
    local src="$model"
    if "$sy" generate --model "$gguf" --prompt-ids 1 --max-new-tokens 1 --format json >/dev/null 2>&1; then src="$gguf"; fi
    "$sy" bench --model "$src" --threads "$threads" -p "$prompt" -n "$gen" -r "$reps" -o json \
      | python3 -c "
import json,sys
d=json.load(sys.stdin)
res=[{'test': (r['test'].get('pp') and 'pp%d' % r['test']['pp']) or 'tg%d' % r['test']['tg'],
      'tokens_per_s': [s['tokens_per_s'] for s in r['samples'] if not s['warmup']]} for r in d['devices'][0]['results']]
print(json.dumps({'engine': 'switchyard', 'type': '$t', 'source': '$src', 'results': res}))" >> "$results"
  }
  if [ $((i % 2)) -eq 0 ]; then run_llama; run_switchyard; else run_switchyard; run_llama; fi
  i=$((i + 1))
done

python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
table = {}
for r in rows:
    for t in r["results"]:
        table.setdefault((r["type"], t["test"]), {})[r["engine"]] = t["tokens_per_s"]
print("| type | test | llama.cpp t/s (median, min-max) | switchyard t/s (median, min-max) | ratio |")
print("|---|---|---:|---:|---:|")
for (ty, test), e in table.items():
    l, s = e.get("llama.cpp"), e.get("switchyard")
    fmt = lambda v: f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" if v else "-"
    ratio = f"{statistics.median(s) / statistics.median(l):.2f}x" if l and s else "-"
    print(f"| {ty} | {test} | {fmt(l)} | {fmt(s)} | {ratio} |")
EOF
rm -f "$results"
