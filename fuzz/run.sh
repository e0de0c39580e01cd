#!/usr/bin/env bash
# Fuzzes Switchyard's parsers of untrusted files with cargo-fuzz (libFuzzer, nightly Rust), each
# target for a bounded time, from a seed corpus built from the test fixtures:
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default 60 s, every target)
#
# Targets: safetensors_checkpoint, safetensors_index, gguf_file, model_config, tokenizer_files,
# emulation_artifact. A crash stops the run with libFuzzer's report and the input saved under
# fuzz/artifacts/<target>/; turn it into a regression test before fixing it. Prints the
# executions each target ran.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors_checkpoint safetensors_index gguf_file model_config tokenizer_files emulation_artifact)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal >&2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked >&2
fi

# Seeds: the fixtures' files, headers of their weights, GGUF exports and emulation artifacts.
seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
(cd "$repo" && cargo build --quiet --bin switchyard && cargo build --quiet -p switchyard-nrt-emulator)
sy="$repo/target/debug/switchyard"
for t in "${targets[@]}"; do mkdir -p "$seeds/$t"; done
i=0
for fx in "$repo"/tests/fixtures/*/; do
  i=$((i + 1))
  mkdir -p "$seeds/model_config" "$seeds/tokenizer_files" "$seeds/safetensors_checkpoint" "$seeds/safetensors_index" "$seeds/gguf_file"
  cp "$fx/config.json" "$seeds/model_config/config-$i.json"
  [ -f "$fx/config.classic.json" ] && cp "$fx/config.classic.json" "$seeds/model_config/classic-$i.json"
  if [ -f "$fx/tokenizer.json" ]; then
    { cat "$fx/tokenizer.json"; printf '\0'; cat "$fx/tokenizer_config.json" 2>/dev/null || true; } \
      > "$seeds/tokenizer_files/tok-$i"
  fi
  [ -f "$fx/model.safetensors.index.json" ] && cp "$fx/model.safetensors.index.json" "$seeds/safetensors_index/index-$i.json"
  # The header of each weights file (8-byte length + JSON), then a little of the data.
  j=0
  for st in "$fx"/*.safetensors; do
    j=$((j + 1))
    python3 - "$st" "$seeds/safetensors_checkpoint/head-$i-$j" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
open(sys.argv[2], "wb").write(b[: 8 + n + 4096])
PY
  done
done
python3 - "$seeds" <<'PY'
import json, struct, sys
root = sys.argv[1]
header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
open(f"{root}/safetensors_checkpoint/tiny", "wb").write(struct.pack("<Q", len(header)) + header + bytes(8))
index = {"metadata": {"total_size": 8}, "weight_map": {"w": "model-00001-of-00001.safetensors"}}
open(f"{root}/safetensors_index/index.json", "w").write(json.dumps(index))
PY
for arch in llama qwen2; do
  "$sy" quantize --model "$repo/tests/fixtures/$arch" --to q8_0 --out "$seeds/gguf_file/$arch-q8_0.gguf" 2>/dev/null || true
done
# Every architecture and both vocabulary kinds, as llama.cpp's converter wrote them.
for f in "$repo"/tests/fixtures/*/peer-q8_0.gguf; do
  cp "$f" "$seeds/gguf_file/$(basename "$(dirname "$f")")-peer.gguf"
done
SWITCHYARD_NRT_LIB="$repo/target/debug/libswitchyard_nrt_emulator.so" SWITCHYARD_NEURON_CACHE="$seeds/cache" \
  "$sy" conformance --device neuron:0 >/dev/null 2>&1 || true
mkdir -p "$seeds/emulation_artifact"
n=0
for a in "$seeds"/cache/*.swemu; do
  [ -f "$a" ] || continue
  n=$((n + 1)); [ $n -le 40 ] || break
  cp "$a" "$seeds/emulation_artifact/"
done

cd "$here"
# Sanitizer builds of the targets are cached between runs on the same machine.
target_dir="${SWITCHYARD_FUZZ_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/fuzz-target}"
summary=""
for t in "${targets[@]}"; do
  corpus="$here/corpus/$t"
  mkdir -p "$corpus" "$here/artifacts/$t"
  echo "== fuzzing $t for ${secs}s ($(ls "$seeds/$t" | wc -l) seeds)" >&2
  log="$(mktemp)"
  set +e
  cargo +nightly fuzz run --target-dir "$target_dir" "$t" "$corpus" "$seeds/$t" -- \
    -max_total_time="$secs" -max_len=65536 -timeout=20 -rss_limit_mb=4096 \
    -artifact_prefix="$here/artifacts/$t/" -print_final_stats=1 2>&1 | tee "$log" | grep -E "^#[0-9]+.*(INITED|DONE)|ERROR|SUMMARY|Test unit written|panicked at|overflowed its stack|memory allocation|^ +[0-9]+: [a-z_]+::" >&2
  status=${PIPESTATUS[0]}
  set -e
  runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" | tail -1)
  summary="$summary\n$t: ${runs:-?} executions in ${secs}s, exit $status"
  rm -f "$log"
  if [ "$status" -ne 0 ]; then
    echo -e "$summary" >&2
    echo "fuzz target $t failed: see the report above and fuzz/artifacts/$t/" >&2
    # The input too, for reproducing a crash found on a machine whose files are gone (CI's clone):
    # `base64 -d > crash && cargo +nightly fuzz run $t crash`.
    crash="$(ls -t "$here/artifacts/$t/" 2>/dev/null | head -1)"
    if [ -n "$crash" ]; then
      echo "crash input $crash (base64):" >&2
      base64 -w0 "$here/artifacts/$t/$crash" >&2
      echo >&2
    fi
    exit "$status"
  fi
done
echo -e "fuzzing summary:$summary"
