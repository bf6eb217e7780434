#!/usr/bin/env bash
# Text serving benchmark: starts `infermesh serve` (release) with all-MiniLM-L6-v2 as `minilm`
# and drives the typed TextEmbedding/Embed with bench/loadgen: one sentence per request at
# concurrency 1 (single-sentence latency through the server) and 32 (dynamic batching across
# callers), and 32 sentences per request; then the same single-sentence and 32-sentence
# requests through the OpenAI-compatible POST /v1/embeddings (HTTP/1.1, JSON floats); reports
# the server's RSS with the model loaded and its peak. Usage: [BENCH_ENGINE=auto|candle|onnxruntime|openvino] bench/text_serve.sh [requests-per-worker]
source "$(dirname "$0")/../scripts/common.sh"
source "$(dirname "$0")/../scripts/fetch_models.sh"
cd "$ROOT"
N=${1:-300}
ENGINE=${BENCH_ENGINE:-auto}
ensure_minilm
ensure_onnxruntime
ensure_openvino
# One release build of the whole workspace (same feature set for every bench script, so
# switching scripts does not rebuild dependencies with other features).
cargo build --release --locked --workspace --bins --examples >&2
BIN="$CARGO_TARGET_DIR/release"
REPO="$(mktemp -d)"
trap 'kill $PID 2>/dev/null || true; rm -rf "$REPO"' EXIT
mkdir -p "$REPO/minilm/1"
for f in config.json model.safetensors tokenizer.json 1_Pooling; do
  ln -s "$INFERMESH_MODEL_CACHE/all-MiniLM-L6-v2/$f" "$REPO/minilm/1/$f"
done
printf 'platform = "bert-embedding"\nengine = "%s"\n' "$ENGINE" > "$REPO/minilm/config.toml"
echo "engine: $ENGINE" >&2
"$BIN/infermesh" serve --model-repository "$REPO" --host 127.0.0.1 --http-port 0 --grpc-port 0 \
  --metrics-port 0 --poll-interval 0 > "$REPO/serve.out" 2>/dev/null &
PID=$!
for _ in $(seq 200); do grep -q grpc "$REPO/serve.out" 2>/dev/null && break; sleep 0.1; done
GRPC=$(sed -n 's/.*grpc \([^ ]*\) .*/\1/p' "$REPO/serve.out")
HTTP=$(sed -n 's/.*http \([^ ]*\) .*/\1/p' "$REPO/serve.out")
echo "server pid $PID grpc $GRPC" >&2
echo "RSS with MiniLM loaded, before load: $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$PID/status); peak so far (loading) $(awk '/VmHWM/ {print $2/1024 " MiB"}' /proc/$PID/status)"
L="$BIN/infermesh-loadgen --target embed --model minilm --url http://$GRPC --warmup 20"
$L --rows 1 --concurrency 1 --requests "$N"
$L --rows 1 --concurrency 32 --connections 8 --requests $(( N / 8 ))
$L --rows 32 --concurrency 1 --requests $(( N / 10 ))
$L --rows 32 --concurrency 4 --connections 4 --requests $(( N / 20 ))
H="$BIN/infermesh-loadgen --target openai-embed --model minilm --url http://$HTTP --warmup 20"
echo "OpenAI-compatible POST /v1/embeddings (HTTP/1.1, JSON):"
$H --rows 1 --concurrency 1 --requests "$N"
$H --rows 32 --concurrency 1 --requests $(( N / 10 ))
echo "RSS after load: $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$PID/status); peak $(awk '/VmHWM/ {print $2/1024 " MiB"}' /proc/$PID/status)"
