#!/usr/bin/env bash
# Batched generation side by side with llama.cpp's `llama-batched-bench` on the very same GGUF
# files, in one run: B sequences, each a prompt of -p tokens then -n generated tokens, all
# decoding together (llama-batched-bench's semantics, which `switchyard bench --batch` follows).
#
#   scripts/compare-llamacpp-batched.sh [--model builtin:smollm2-135m|FILE.gguf]
#       [--types q8_0,q4_0,f32] [-p 128] [-n 32] [--batch 1,4,16] [-r 3] [--threads 2] [--avx2]
#
# --avx2: both engines restricted to AVX2 + FMA + F16C (llama.cpp built without AVX-512, cached
# apart; Switchyard with SWITCHYARD_CPU_KERNELS=avx2): what an AVX2-only CPU would run.
#
# For a built-in model each type is written as GGUF by `switchyard quantize` (cached under $WORK);
# llama-batched-bench is built from PyPI's llama-cpp-python sdist by scripts/llamacpp-tools.sh
# (outside the repo). Each round (-r of them) measures every file once with each engine, taking
# turns (who goes first flips per round and file); llama-batched-bench measures each B once per
# run, Switchyard's bench is run with one repetition after its warm-up. Printed: per file and B,
# the aggregate generation tokens/s (median, min-max) of both and their ratio, the prompt
# tokens/s, and Switchyard's B = max aggregate rate against its own pp128 rate on the same file.
# Not part of CI (a performance comparison).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
model="builtin:smollm2-135m"
types="q8_0,q4_0,f32"
prompt=128
gen=32
batch="1,4,16"
reps=3
threads=2
avx2=0
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --types) types="$2"; shift 2 ;;
    -p) prompt="$2"; shift 2 ;;
    -n) gen="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    -r) reps="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --avx2) avx2=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
WORK="${SWITCHYARD_COMPARE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/compare}"
mkdir -p "$WORK"
source "$here/compare-common.sh"
[ "$avx2" = 1 ] && restrict_to_avx2
tools=$("$here/llamacpp-tools.sh" llama-batched-bench)
machine_line
echo "threads $threads; -p $prompt -n $gen, B = $batch, r = $reps; switchyard kernels: $("$sy" devices | grep -m1 'kernels:' | xargs)" >&2

gguf_files "$model" "$types"
max_b=$(echo "$batch" | tr ',' '\n' | sort -n | tail -1)
ctx=$(( max_b * (prompt + gen + 1) + 64 ))

results="$(mktemp)"
trap 'rm -f "$results"' EXIT
run_llama() {
  local f=$1 label=$2
  "$tools/llama-batched-bench" -m "$f" -t "$threads" -c "$ctx" -b 2048 -ub 512 \
    -npp "$prompt" -ntg "$gen" -npl "$batch" --output-format jsonl 2>/dev/null | grep '^{' |
    python3 -c "
import json, sys
for l in sys.stdin:
    r = json.loads(l)
    print(json.dumps({'engine': 'llama.cpp', 'label': '$label', 'b': r['pl'], 'gen': r['speed_tg'], 'pp': r['speed_pp']}))" >> "$results"
}
run_switchyard() {
  local f=$1 label=$2
  "$sy" bench --model "$f" --threads "$threads" --batch "$batch" -p "$prompt" -n "$gen" -r 1 -o json 2>/dev/null |
    python3 -c "
import json, sys
d = json.load(sys.stdin)
for b in d['devices'][0]['batches']:
    for s in b['samples']:
        if not s['warmup']:
            print(json.dumps({'engine': 'switchyard', 'label': '$label', 'b': s['batch'],
                              'gen': s['gen_tokens'] / s['gen_s'], 'pp': s['prompt_tokens'] / s['prompt_s']}))" >> "$results"
  "$sy" bench --model "$f" --threads "$threads" -p 128 -n "" -r 1 -o json 2>/dev/null | python3 -c "
import json, sys
d = json.load(sys.stdin)
for r in d['devices'][0]['results']:
    print(json.dumps({'engine': 'switchyard', 'label': '$label', 'b': 'pp128',
                      'tps': [s['tokens_per_s'] for s in r['samples'] if not s['warmup']]}))" >> "$results"
}
# One measurement of each engine per round, the order flipping every round and file: the host's
# speed drifts by tens of percent over minutes here, and back-to-back blocks of one engine's
# repetitions measured the drift as much as the engines.
for rep in $(seq "$reps"); do
  for i in "${!files[@]}"; do
    if [ $(((i + rep) % 2)) -eq 0 ]; then
      run_llama "${files[$i]}" "${labels[$i]}"; run_switchyard "${files[$i]}" "${labels[$i]}"
    else
      run_switchyard "${files[$i]}" "${labels[$i]}"; run_llama "${files[$i]}" "${labels[$i]}"
    fi
  done
done

python3 - "$results" "$max_b" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
max_b = int(sys.argv[2])
gen, pp, own_pp = {}, {}, {}
for r in rows:
    if r["b"] == "pp128":
        own_pp.setdefault(r["label"], []).extend(r["tps"])
        continue
    gen.setdefault((r["label"], r["b"]), {}).setdefault(r["engine"], []).append(r["gen"])
    pp.setdefault((r["label"], r["b"]), {}).setdefault(r["engine"], []).append(r["pp"])
fmt = lambda v: f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" if v else "-"
print("| file | B | llama.cpp gen t/s, all sequences | Switchyard gen t/s, all sequences | ratio | llama.cpp prompt t/s | Switchyard prompt t/s |")
print("|---|---:|---:|---:|---:|---:|---:|")
for (label, b), e in sorted(gen.items(), key=lambda kv: (kv[0][0], kv[0][1])):
    l, s = e.get("llama.cpp"), e.get("switchyard")
    ratio = f"{statistics.median(s) / statistics.median(l):.2f}x" if l and s else "-"
    p = pp[(label, b)]
    print(f"| {label} | {b} | {fmt(l)} | {fmt(s)} | {ratio} | {fmt(p.get('llama.cpp'))} | {fmt(p.get('switchyard'))} |")
print()
print(f"| file | Switchyard pp128 t/s | Switchyard gen t/s at B={max_b} | share of pp128 |")
print("|---|---:|---:|---:|")
for label, v in own_pp.items():
    s = gen.get((label, max_b), {}).get("switchyard")
    if s:
        print(f"| {label} | {fmt(v)} | {fmt(s)} | {statistics.median(s) / statistics.median(v):.2f} |")
EOF
