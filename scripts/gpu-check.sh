#!/usr/bin/env bash
# The GPU check, prepared for a GPU machine that has no Rust and no network.
#
# Here (with Rust):  scripts/gpu-check.sh --build
#     builds `switchyard` with `--features cuda` (toolchain from scripts/cuda-toolchain.sh) and
#     leaves the stripped binary, gzipped (its embedded PTX is text: 68 MB -> 18 MB), in
#     dist/switchyard-cuda.gz (carry dist/ and the repository there).
# There (repo root): scripts/gpu-check.sh
#     1. checks the binary's CUDA libraries with ldd, adding what the machine has (the CUDA
#        toolkit, or the pip packages behind PyTorch) to LD_LIBRARY_PATH;
#     2. the conformance suite on cuda:0, with each quantized-matmul variant;
#     3. parity with the Hugging Face goldens of every fixture architecture: f32 (tokens identical,
#        logits within 1e-4) and bf16 (logits within 10 % of the largest |logit|, the same
#        tolerance as the CPU's bf16 test; matching greedy tokens reported);
#     4. `switchyard bench --devices cpu,cuda:0` on builtin:tinyllama-1.1b (bf16 on the GPU), with
#        `--project h100,h200 --calibrate` (the GPU measured next to its own projection, and the
#        measured fraction carried to both projections), and
#        PyTorch + transformers greedy generation with the same shapes on the same GPU;
#     5. `switchyard bench --batch 1,4,16` on the GPU (aggregate generation rate per batch size);
#     and prints one short table last. Results land in $OUT (or a temporary directory).
#
# Environment: SWITCHYARD_BIN (default dist/switchyard-cuda), PYTHON (default python3),
# SWITCHYARD_GPU_CHECK_DEVICE (default cuda:0; `cpu` runs the same steps on a machine without a GPU,
# with the small built-in model, to check the script itself).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--build" ]; then
    set -e
    eval "$(scripts/cuda-toolchain.sh)"
    target=${SWITCHYARD_CUDA_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/cuda-target}
    CARGO_TARGET_DIR="$target" cargo build --release --features cuda --bin switchyard
    mkdir -p dist
    rm -f dist/switchyard-cuda dist/switchyard-cuda.gz
    strip -o dist/switchyard-cuda "$target/release/switchyard"
    echo "dist/switchyard-cuda: $(du -h dist/switchyard-cuda | cut -f1) stripped"
    gzip -9 dist/switchyard-cuda
    echo "dist/switchyard-cuda.gz: $(du -h dist/switchyard-cuda.gz | cut -f1) to carry"
    exit 0
fi

bin=${SWITCHYARD_BIN:-dist/switchyard-cuda}
device=${SWITCHYARD_GPU_CHECK_DEVICE:-cuda:0}
python=${PYTHON:-python3}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
start=$(date +%s)
step() { echo; echo "== $* ($(($(date +%s) - start)) s)"; }
if [ ! -x "$bin" ] && [ -f "$bin.gz" ]; then
    gzip -dc "$bin.gz" >"$bin" && chmod +x "$bin"
fi
[ -x "$bin" ] || { echo "no binary at $bin: run scripts/gpu-check.sh --build on a machine with Rust"; exit 1; }

if [ "$device" = cpu ]; then
    model=builtin:smollm2-135m bench_devices=cpu torch_device=cpu p=64 n=16 r=2
else
    model=builtin:tinyllama-1.1b bench_devices="cpu,$device" torch_device=cuda p=512 n=128 r=5
fi

step "CUDA libraries (ldd)"
missing() { ldd "$bin" | awk '/not found/ { print $1 }'; }
if [ -n "$(missing)" ]; then
    echo "missing: $(missing | tr '\n' ' ')"
    candidates=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu)
    while IFS= read -r d; do candidates+=("$d"); done < <("$python" - <<'EOF' 2>/dev/null
import os
try:
    import nvidia
    for p in nvidia.__path__:
        for sub in ("cu13/lib", "cublas/lib", "cuda_runtime/lib", "curand/lib", "cuda_nvrtc/lib"):
            if os.path.isdir(os.path.join(p, sub)):
                print(os.path.join(p, sub))
except ImportError:
    pass
try:
    import torch
    print(os.path.join(os.path.dirname(torch.__file__), "lib"))
except ImportError:
    pass
EOF
)
    add_dir() {
        case ":${LD_LIBRARY_PATH:-}:" in *":$1:"*) ;; *) export LD_LIBRARY_PATH="$1${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;; esac
    }
    for lib in $(missing); do
        found=
        for d in "${candidates[@]}"; do
            if [ -e "$d/$lib" ]; then add_dir "$d"; found=1; break; fi
        done
        if [ -z "$found" ]; then
            # Last resort: a bounded search of the usual install roots.
            hit=$(find /usr /opt /usr/local /root /home -maxdepth 9 -name "$lib" 2>/dev/null | grep -v '/stubs/' | head -1)
            [ -n "$hit" ] && add_dir "$(dirname "$hit")"
        fi
    done
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
fi
if [ -n "$(missing)" ]; then
    echo "still missing: $(missing | tr '\n' ' ')"
    exit 1
fi
ldd "$bin" | grep -E 'libcuda|libcublas|libcurand|libcudart|libnvrtc' || true
"$bin" devices | tee "$out/devices.txt"

step "conformance on $device"
timeout 300 "$bin" conformance --device "$device" >"$out/conformance.txt" 2>&1
echo "exit $?" >>"$out/conformance.txt"
grep -vE '\| ok \|' "$out/conformance.txt" | tail -15

if [ "$device" != cpu ]; then
    # The other quantized-matmul variant (weights dequantized, f32 activations), so both are
    # checked wherever a GPU is lent.
    step "conformance on $device with SWITCHYARD_CUDA_QMATMUL=dequantize"
    SWITCHYARD_CUDA_QMATMUL=dequantize timeout 300 "$bin" conformance --device "$device" \
        >"$out/conformance-dequantize.txt" 2>&1
    echo "exit $?" >>"$out/conformance-dequantize.txt"
    grep -E 'FAILED|^passed' "$out/conformance-dequantize.txt" | cut -c1-200 | tail -15
fi

step "parity with the Hugging Face goldens on $device"
# One line of parity.jsonl: ARCH, DTYPE and the checker's last line (its JSON verdict, or the
# error it died with, kept as text so the summary still reads the file).
record() {
    "$python" -c "
import json, sys
arch, dtype, text = sys.argv[1:4]
try:
    result = json.loads(text)
except ValueError:
    result = {'ok': False, 'dtype': dtype, 'error': text}
print(json.dumps({'arch': arch, 'result': result}))" "$1" "$2" "$3" >>"$out/parity.jsonl"
}
for dir in tests/fixtures/*/; do
    arch=$(basename "$dir")
    if [ -f "$dir/modules.json" ]; then
        # An encoder: its sentence-transformers vectors, f32, max abs error <= 1e-4.
        "$python" -c "import json,sys; print('\n'.join(json.load(open(sys.argv[1]))['texts']))" "$dir/golden.json" \
            | timeout 120 "$bin" embed --device "$device" --model "$dir" -o json >"$out/embed-$arch.json" 2>"$out/embed-$arch.err"
        result=$("$python" -c "
import json, sys
g = json.load(open(sys.argv[1])); r = json.load(open(sys.argv[2]))
err = max(abs(a - b) for d, w in zip(r['data'], g['embeddings']) for a, b in zip(d['embedding'], w))
print(json.dumps({'max_abs_error': err, 'ok': err <= 1e-4}))" "$dir/golden.json" "$out/embed-$arch.json" 2>&1 | tail -1)
        record "$arch" embeddings "$result"
        echo "$arch embeddings: $result"
        continue
    fi
    ids=$("$python" -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))['prompt_ids'])))" "$dir/golden.json")
    for dtype in f32 bf16; do
        json="$out/parity-$arch-$dtype.json"
        timeout 120 "$bin" generate --device "$device" --model "$dir" --prompt-ids "$ids" \
            --max-new-tokens 20 --temperature 0 --ignore-eos --format json --logits --dtype "$dtype" \
            >"$json" 2>"$out/parity-$arch-$dtype.err"
        result=$("$python" scripts/check_parity.py "$dir/golden.json" "$json" --dtype "$dtype" 2>&1 | tail -1)
        record "$arch" "$dtype" "$result"
        echo "$arch $dtype: $result"
    done
done

step "switchyard bench --devices $bench_devices on $model"
timeout 360 "$bin" bench --model "$model" --devices "$bench_devices" -p "$p" -n "$n" -r "$r" -o json \
    --project h100,h200 --calibrate >"$out/bench.json" 2>"$out/bench.err"
echo "exit $?"

step "switchyard bench --batch 1,4,16 on $device (sequences decoding together in one KV pool)"
timeout 180 "$bin" bench --model "$model" --devices "$device" --batch 1,4,16 -p 128 -n 32 -r 2 \
    >"$out/batch.md" 2>"$out/batch.err"
echo "exit $?"
grep '| pp128+tg32 |' "$out/batch.md"

step "PyTorch + transformers greedy generation on $torch_device"
timeout 300 "$python" scripts/torch_decode_bench.py --model "${model#builtin:}" --device "$torch_device" \
    --dtype "$([ "$device" = cpu ] && echo f32 || echo bf16)" -n "$n" -r "$r" \
    >"$out/torch.json" 2>"$out/torch.err"
echo "exit $?"
tail -3 "$out/torch.err"

step "summary"
"$python" scripts/gpu_check_summary.py "$out" "$device" | tee "$out/summary.md"
