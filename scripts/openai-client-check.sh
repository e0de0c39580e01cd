#!/usr/bin/env bash
# Checks `switchyard serve` with the official `openai` Python client (pinned below): completions
# and chat, whole and streamed, usage, stop strings, token-id prompts, logprobs, the error cases,
# the API key, cancellation by disconnecting, and 32 concurrent greedy streams on 8 slots that
# each get exactly the tokens they get alone, and /v1/embeddings on the BERT fixture against its
# sentence-transformers goldens (scripts/openai_client_check.py). Ends the servers with SIGTERM
# and requires exit status 0.
#
#   scripts/openai-client-check.sh [MODEL]      (default: the tests/fixtures/llama fixture)
#
# The client is installed once into a virtual environment outside the repository
# ($SWITCHYARD_OPENAI_VENV, default ~/.cache/switchyard/openai-venv-VERSION). When the package
# index cannot be reached and no such environment exists, the check is skipped with the reason.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
OPENAI_VERSION="3.57.0"
VENV="${SWITCHYARD_OPENAI_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/openai-venv-$OPENAI_VERSION}"
model="${1:-$repo/tests/fixtures/llama}"

if ! "$VENV/bin/python" -c "import openai; assert openai.__version__ == '$OPENAI_VERSION'" 2>/dev/null; then
  echo "installing openai==$OPENAI_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  if ! "$VENV/bin/pip" install -q "openai==$OPENAI_VERSION" >&2; then
    if ! "$VENV/bin/pip" download -q --no-deps -d "$(mktemp -d)" "openai==$OPENAI_VERSION" >/dev/null 2>&1; then
      echo "SKIPPED: the Python package index is unreachable, so openai==$OPENAI_VERSION cannot be installed" >&2
      exit 0
    fi
    echo "installing openai failed although the package index is reachable" >&2
    exit 1
  fi
fi

cd "$repo"
cargo build --quiet --bin switchyard
log=$(mktemp)
slow_log=$(mktemp)
key="check-$RANDOM$RANDOM"
SWITCHYARD_API_KEY="$key" target/debug/switchyard serve --model "$model" --served-model-name fixture \
    --port 0 --slots 8 --max-queue 64 2> "$log" &
pid=$!
# A slow model (the built-in SmolLM2-135M shape, generated weights, token-id prompts) for the
# cancellation check, so that a request is surely still generating when its client leaves.
SWITCHYARD_API_KEY="$key" target/debug/switchyard serve --model builtin:smollm2-135m \
    --served-model-name fixture --port 0 --slots 2 --max-context 256 2> "$slow_log" &
slow_pid=$!
# An encoder: /v1/embeddings.
embed_log=$(mktemp)
SWITCHYARD_API_KEY="$key" target/debug/switchyard serve --model tests/fixtures/bert \
    --served-model-name fixture --port 0 2> "$embed_log" &
embed_pid=$!
trap 'kill "$pid" "$slow_pid" "$embed_pid" 2>/dev/null || true' EXIT
ready() {  # LOG PID: prints the server's URL once /health is 200
  local url=""
  for _ in $(seq 1 1200); do
    url=$(grep -o 'http://[0-9.:]*' "$1" | head -1 || true)
    if [ -n "$url" ] && curl -sf "$url/health" >/dev/null; then echo "$url"; return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then cat "$1" >&2; echo "the server exited" >&2; return 1; fi
    sleep 0.1
  done
  cat "$1" >&2; echo "never ready" >&2; return 1
}
url=$(ready "$log" "$pid")
slow_url=$(ready "$slow_log" "$slow_pid")
embed_url=$(ready "$embed_log" "$embed_pid")
echo "servers at $url, $slow_url and $embed_url"
"$VENV/bin/python" "$here/openai_client_check.py" "$url" "$key" "$slow_url" "$embed_url" \
    tests/fixtures/bert/golden.json
kill -TERM "$embed_pid"
wait "$embed_pid" || { echo "the embedding server exited with $? after SIGTERM" >&2; exit 1; }
kill -TERM "$slow_pid"
wait "$slow_pid" || { echo "the slow server exited with $? after SIGTERM" >&2; exit 1; }
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
trap - EXIT
cat "$log"
[ "$status" -eq 0 ] || { echo "the server exited with $status after SIGTERM" >&2; exit 1; }
echo "openai client check passed; the server stopped cleanly on SIGTERM"
