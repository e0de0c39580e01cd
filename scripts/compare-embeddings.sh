#!/usr/bin/env bash
# Embedding throughput side by side, in one run on this machine: Switchyard (from the
# sentence-transformers directory and from the GGUF file llama.cpp's converter writes of it),
# sentence-transformers (PyTorch on the CPU) and llama.cpp's `llama-embedding`, all on a BERT of
# all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads; random weights) with the same
# threads, BATCH texts of exactly TOKENS tokens each.
#
#   scripts/compare-embeddings.sh            # THREADS=2 BATCH=32 TOKENS=128 REPS=3 ROUNDS=3
#
# What each figure covers: Switchyard's `bench` times one embedding call on token ids (upload,
# the graph, pooling, normalization, read-back); sentence-transformers' `encode` includes its
# (Rust) tokenizer; llama-embedding's is a run's wall time less that of a run on one two-token
# text (so loading and start-up are excluded, its tokenization included).
# Each engine gets one warm-up and REPS measured runs per round, the engines taking turns for
# ROUNDS rounds, so that a slow stretch of a shared host falls on all of them rather than on
# whichever ran then; the table gives the median and range of all runs, and the range of the
# rounds' ratios.
#
# Not in CI: PyPI's torch wheel is the 6 GB CUDA build. Everything is cached outside the
# repository: the venv (keyed by its pins), the model and its GGUF file, llama.cpp's build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
THREADS="${THREADS:-2}"
BATCH="${BATCH:-32}"
TOKENS="${TOKENS:-128}"
REPS="${REPS:-3}"
ROUNDS="${ROUNDS:-3}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard"
PINS=(torch==2.15.0 transformers==4.57.6 sentence-transformers==5.7.0)
venv="$CACHE/st-venv-$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-12)"
if [ ! -f "$venv/.complete" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "${PINS[@]}" || { echo "SKIPPED: cannot install ${PINS[*]} from PyPI" >&2; exit 3; }
  touch "$venv/.complete"
fi
py="$venv/bin/python"
model="$CACHE/compare/minilm-l6-shape"
if [ ! -f "$model/model.safetensors" ]; then
  mkdir -p "$CACHE/compare"
  "$py" "$here/embeddings_peer.py" make "$model" >&2
fi
gguf="$model/peer-f32.gguf"
if [ ! -f "$gguf" ]; then
  "$py" "$here/convert_fixtures_gguf.py" --llamacpp "$("$here/llamacpp-tools.sh" --source)" \
      --out "$CACHE/compare" minilm-l6-shape >&2
fi
tools="$("$here/llamacpp-tools.sh" llama-embedding)"
cd "$repo"
cargo build --release --quiet --bin switchyard
sy="$repo/target/release/switchyard"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
text="$("$py" "$here/embeddings_peer.py" text "$TOKENS")"
for _ in $(seq "$BATCH"); do echo "$text"; done > "$work/texts.txt"

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $THREADS threads; $BATCH texts × $TOKENS tokens; $ROUNDS rounds of r=$REPS after 1 warm-up" >&2
echo "switchyard: $("$sy" devices | grep -m1 'kernels:' | xargs)" >&2

# Seconds per call, one per line, for each engine.
sy_secs() {  # MODEL
  "$sy" bench --model "$1" -p "$TOKENS" --batch "$BATCH" -r "$REPS" --warmup 1 \
      --threads "$THREADS" -o json | "$py" -c 'import json,sys; [print(s) for s in json.load(sys.stdin)["devices"][0]["results"][0]["seconds"]]'
}
st_secs() {
  "$py" "$here/embeddings_peer.py" bench "$model" --batch "$BATCH" --tokens "$TOKENS" \
      --threads "$THREADS" --reps "$REPS" --warmup 1 2>/dev/null \
    | "$py" -c 'import json,sys; [print(s) for s in json.load(sys.stdin)["seconds"]]'
}
llama_secs() {
  # llama-embedding prints no timings of its own: each run's wall time less that of a run on
  # one two-token text (loading, start-up and exit), warm-up passes off in both.
  local n=$((BATCH * TOKENS))
  "$py" "$here/embeddings_peer.py" text 2 > "$work/one.txt"
  run() {  # FILE -> seconds
    local t0 t1
    t0=$(date +%s.%N)
    "$tools/llama-embedding" -m "$gguf" -f "$1" -t "$THREADS" -tb "$THREADS" -b "$n" -ub "$n" \
        -c "$n" --no-warmup --embd-output-format json > "$work/llama.out" 2> "$work/llama.err" \
      || { cat "$work/llama.err" >&2; exit 1; }
    t1=$(date +%s.%N)
    "$py" -c "print($t1 - $t0)"
  }
  for i in $(seq 0 "$REPS"); do
    full=$(run "$work/texts.txt")
    grep -q "n_tokens = $n, n_seq = $BATCH" "$work/llama.err" \
      || { echo "llama-embedding did not take $BATCH texts of $TOKENS tokens in one batch" >&2; exit 1; }
    base=$(run "$work/one.txt")
    [ "$i" -gt 0 ] && "$py" -c "print($full - $base)"
  done
}
for r in $(seq "$ROUNDS"); do
  sy_secs "$model" | sed "s/^/$r /" >> "$work/sy-st"
  sy_secs "$gguf" | sed "s/^/$r /" >> "$work/sy-gguf"
  st_secs | sed "s/^/$r /" >> "$work/st"
  llama_secs | sed "s/^/$r /" >> "$work/llama"
done
"$py" - "$work" "$BATCH" "$TOKENS" <<'EOF'
import statistics, sys
work, batch, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [("Switchyard (safetensors directory)", "sy-st"), ("Switchyard (the GGUF file)", "sy-gguf"),
        ("sentence-transformers (PyTorch CPU)", "st"), ("llama.cpp llama-embedding (the GGUF file)", "llama")]
seq, rounds = {}, {}
for name, f in rows:
    runs = [l.split() for l in open(f"{work}/{f}") if l.strip()]
    rates = sorted(batch / float(s) for _, s in runs)
    seq[f] = (statistics.median(rates), rates[0], rates[-1])
    for r, s in runs:
        rounds.setdefault(f, {}).setdefault(r, []).append(batch / float(s))
print("| engine | sequences/s (median, min–max) | tokens/s | Switchyard (same file) ÷ engine (rounds) |")
print("|---|---:|---:|---:|")
for name, f in rows:
    med, lo, hi = seq[f]
    same = "sy-gguf" if f == "llama" else "sy-st"
    ratio = ""
    if not f.startswith("sy"):
        per = sorted(statistics.median(rounds[same][r]) / statistics.median(v)
                     for r, v in rounds[f].items())
        ratio = f"{seq[same][0] / med:.2f}× ({per[0]:.2f}–{per[-1]:.2f})"
    print(f"| {name} | {med:.1f} ({lo:.1f}–{hi:.1f}) | {med * tokens:.0f} | {ratio} |")
EOF
