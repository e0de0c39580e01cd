#!/usr/bin/env bash
# Side-by-side CPU comparison of Switchyard and llama.cpp on the very same GGUF files, in one run.
#
#   scripts/compare-llamacpp.sh [--model builtin:smollm2-135m|FILE.gguf] [--types q8_0,q4_0,f32]
#                               [-p 128,512] [-n 64] [-r 5] [--threads 2] [--avx2]
#
# For a built-in model each type is written as GGUF by `switchyard quantize` (cached under $WORK);
# a GGUF file is measured as it is. llama.cpp's own `llama-bench` (built from PyPI's
# llama-cpp-python sdist by scripts/llamacpp-tools.sh, outside the repo) and `switchyard bench`
# time the same file with the same threads; the two alternate, llama.cpp first for even types and
# Switchyard first for odd ones, so drift on a shared machine favours neither. Peak resident
# memory of each is reported too (GNU time; 16 tokens generated with a context of 16 for
# llama-bench, of 32 for switchyard generate).
#
# --avx2: both engines restricted to AVX2 + FMA + F16C: llama.cpp built without any AVX-512
# (its own build, cached apart) and Switchyard with SWITCHYARD_CPU_KERNELS=avx2; what an AVX2-only
# CPU runs, measurable on any x86 machine. Not part of CI.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
model="builtin:smollm2-135m"
types="q8_0,q4_0,f32"
prompt="128,512"
gen="64"
reps=5
threads=2
avx2=0
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --types) types="$2"; shift 2 ;;
    -p) prompt="$2"; shift 2 ;;
    -n) gen="$2"; shift 2 ;;
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
bench=$("$here/llamacpp-tools.sh" llama-bench)/llama-bench
machine_line
echo "threads $threads; -p $prompt -n $gen -r $reps; switchyard kernels: $("$sy" devices | grep -m1 'kernels:' | xargs); llama.cpp: ${LLAMACPP_CMAKE_ARGS:-native build, no AMX}" >&2

gguf_files "$model" "$types"

results="$(mktemp)"
trap 'rm -f "$results" "$results.rss"' EXIT
run_llama() {
  local f=$1 label=$2
  "$bench" -m "$f" -t "$threads" -p "$prompt" -n "$gen" -r "$reps" -o json 2>/dev/null | python3 -c "
import json, sys
for r in json.load(sys.stdin):
    test = f\"pp{r['n_prompt']}\" if r['n_prompt'] else f\"tg{r['n_gen']}\"
    print(json.dumps({'engine': 'llama.cpp', 'label': '$label', 'test': test, 'tps': r['samples_ts']}))" >> "$results"
  local rss
  /usr/bin/time -f '%M' -o "$results.rss" "$bench" -m "$f" -t "$threads" -p 0 -n 16 -r 1 >/dev/null 2>&1
  rss=$(tail -1 "$results.rss")
  echo "{\"engine\": \"llama.cpp\", \"label\": \"$label\", \"test\": \"rss\", \"kib\": $rss}" >> "$results"
}
run_switchyard() {
  local f=$1 label=$2
  "$sy" bench --model "$f" --threads "$threads" -p "$prompt" -n "$gen" -r "$reps" -o json 2>/dev/null | python3 -c "
import json, sys
d = json.load(sys.stdin)
dev = d['devices'][0]
bw = (dev.get('bandwidth') or {}).get('bytes_per_s')
for r in dev['results']:
    test = f\"pp{r['test']['pp']}\" if r['test'].get('pp') else f\"tg{r['test']['tg']}\"
    print(json.dumps({'engine': 'switchyard', 'label': '$label', 'test': test,
                      'tps': [s['tokens_per_s'] for s in r['samples'] if not s['warmup']],
                      'bytes_per_token': r.get('bytes_per_token'), 'bandwidth': bw}))" >> "$results"
  local rss
  RAYON_NUM_THREADS=$threads /usr/bin/time -f '%M' -o "$results.rss" "$sy" generate --model "$f" --prompt-ids 1 \
    --max-new-tokens 16 --ignore-eos --max-context 32 --temperature 0 >/dev/null 2>&1
  rss=$(tail -1 "$results.rss")
  echo "{\"engine\": \"switchyard\", \"label\": \"$label\", \"test\": \"rss\", \"kib\": $rss}" >> "$results"
}
for i in "${!files[@]}"; do
  if [ $((i % 2)) -eq 0 ]; then
    run_llama "${files[$i]}" "${labels[$i]}"; run_switchyard "${files[$i]}" "${labels[$i]}"
  else
    run_switchyard "${files[$i]}" "${labels[$i]}"; run_llama "${files[$i]}" "${labels[$i]}"
  fi
done

python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
table, rss, traffic = {}, {}, {}
for r in rows:
    if r["test"] == "rss":
        rss.setdefault(r["label"], {})[r["engine"]] = r["kib"]
    else:
        table.setdefault((r["label"], r["test"]), {})[r["engine"]] = r["tps"]
        if r.get("bytes_per_token") and r.get("bandwidth"):
            traffic[(r["label"], r["test"])] = (r["bytes_per_token"], r["bandwidth"])
# Decode's share of the bandwidth roofline: the bytes a token reads (Switchyard's count of weights
# and KV cache for the file, the same for both engines) times tokens/s, over the bandwidth Switchyard's probe
# measured in the same run.
print("| file | test | llama.cpp t/s (median, min-max) | Switchyard t/s (median, min-max) | ratio | roofline share llama.cpp / Switchyard |")
print("|---|---|---:|---:|---:|---:|")
for (label, test), e in table.items():
    l, s = e.get("llama.cpp"), e.get("switchyard")
    fmt = lambda v: f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" if v else "-"
    ratio = f"{statistics.median(s) / statistics.median(l):.2f}x" if l and s else "-"
    share = "-"
    if test.startswith("tg") and (label, test) in traffic and l and s:
        b, bw = traffic[(label, test)]
        share = " / ".join(f"{statistics.median(v) * b / bw:.0%}" for v in (l, s))
    print(f"| {label} | {test} | {fmt(l)} | {fmt(s)} | {ratio} | {share} |")
print()
print("| file | llama.cpp peak RSS | Switchyard peak RSS | ratio |")
print("|---|---:|---:|---:|")
for label, e in rss.items():
    l, s = e.get("llama.cpp"), e.get("switchyard")
    print(f"| {label} | {l / 1024:.0f} MiB | {s / 1024:.0f} MiB | {s / l:.2f}x |")
EOF
