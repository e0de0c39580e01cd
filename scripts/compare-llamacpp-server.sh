#!/usr/bin/env bash
# Serving side by side with llama.cpp's `llama-server` on the very same GGUF files, measured by
# the same load generator (`switchyard bench serve --url`) in one run: both servers get the same
# slots and threads, the same seeded random-token prompts (exact lengths with ignore_eos) and the
# same concurrency sweep; the engines alternate per file (llama.cpp first for even files).
#
#   scripts/compare-llamacpp-server.sh [--model builtin:smollm2-135m|FILE.gguf] [--types q8_0,q4_0]
#       [--concurrency 1,4,16] [--input-len 256] [--output-len 128] [--slots 16] [--threads 2]
#       [--num-prompts N] [--out DIR]
#
# llama-server is built from PyPI's llama-cpp-python sdist by scripts/llamacpp-tools.sh (outside
# the repo). Printed: per file and concurrency, output tokens/s and p99 TTFT of both and their
# ratios; the full json reports are kept in --out (default: a temporary directory). Not part of
# CI (a performance comparison).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
model="builtin:smollm2-135m"
types="q8_0,q4_0"
concurrency="1,4,16"
input_len=256
output_len=128
slots=16
threads=2
num_prompts=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --types) types="$2"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --input-len) input_len="$2"; shift 2 ;;
    --output-len) output_len="$2"; shift 2 ;;
    --slots) slots="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --num-prompts) num_prompts="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
WORK="${SWITCHYARD_COMPARE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/compare}"
mkdir -p "$WORK"
out="${out:-$(mktemp -d)}"
mkdir -p "$out"
tools=$("$here/llamacpp-tools.sh" llama-server)
source "$here/compare-common.sh"
machine_line
echo "threads $threads, slots $slots; prompts of $input_len tokens, $output_len generated; concurrency $concurrency; switchyard kernels: $("$sy" devices | grep -m1 'kernels:' | xargs)" >&2

gguf_files "$model" "$types" .gguf
per_slot=$(( input_len + output_len + 16 ))
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT

wait_ready() {
  local url=$1
  for _ in $(seq 1 1200); do
    if curl -sf "$url/health" >/dev/null 2>&1; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || { echo "the server exited" >&2; return 1; }
    sleep 0.1
  done
  echo "never ready: $url" >&2; return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

measure() {
  local engine=$1 f=$2 label=$3 port url
  port=$(free_port)
  url="http://127.0.0.1:$port"
  if [ "$engine" = llama.cpp ]; then
    "$tools/llama-server" -m "$f" -t "$threads" -tb "$threads" -np "$slots" -c $(( slots * per_slot )) \
      --host 127.0.0.1 --port "$port" --alias bench > "$out/$engine-$label.log" 2>&1 &
  else
    "$sy" serve --model "$f" --threads "$threads" --slots "$slots" --max-context "$per_slot" \
      --host 127.0.0.1 --port "$port" --served-model-name bench --max-queue 100000 \
      > "$out/$engine-$label.log" 2>&1 &
  fi
  server_pid=$!
  wait_ready "$url"
  "$sy" bench serve --url "$url" --model "$f" --served-model-name bench \
    --concurrency "$concurrency" --input-len "$input_len" --output-len "$output_len" \
    ${num_prompts:+--num-prompts "$num_prompts"} -o json --out "$out/$engine-$label.json" >&2
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

for i in "${!files[@]}"; do
  f="${files[$i]}"; label="${labels[$i]}"
  if (( i % 2 == 0 )); then order=(llama.cpp switchyard); else order=(switchyard llama.cpp); fi
  for engine in "${order[@]}"; do
    echo "== $label: $engine" >&2
    measure "$engine" "$f" "$label"
  done
done

python3 - "$out" "${labels[@]}" <<'PY'
import json, sys
out, labels = sys.argv[1], sys.argv[2:]
print("| file | concurrency | llama-server out tok/s | Switchyard out tok/s | ratio | llama-server p99 TTFT ms | Switchyard p99 TTFT ms | TTFT ratio |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for label in labels:
    runs = {e: json.load(open(f"{out}/{e}-{label}.json"))["servers"][0]["points"] for e in ("llama.cpp", "switchyard")}
    for ll, sy in zip(runs["llama.cpp"], runs["switchyard"]):
        c = ll["load"].get("concurrency")
        failed = ll["failed"] + sy["failed"]
        print(f"| {label} | {c} | {ll['output_tokens_per_s']:.1f} | {sy['output_tokens_per_s']:.1f} | "
              f"{sy['output_tokens_per_s'] / ll['output_tokens_per_s']:.2f}x | {ll['ttft_ms']['p99']:.0f} | "
              f"{sy['ttft_ms']['p99']:.0f} | {sy['ttft_ms']['p99'] / ll['ttft_ms']['p99']:.2f}x |"
              + (f" ({failed} failed)" if failed else ""))
print(f"\nreports: {out}")
PY
