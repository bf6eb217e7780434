#!/usr/bin/env bash
# Serving benchmark: starts `infermesh serve` (release) on the 30-feature, 100-tree bench model
# and drives it with bench/loadgen over KServe V2 gRPC (one row per request) at concurrency
# 1 and 32; then reports the server's RSS. Usage: bench/serve_bench.sh [requests-per-worker]
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
N=${1:-20000}
cargo build --release --locked --workspace --bins --examples >&2
BIN="$CARGO_TARGET_DIR/release"
REPO="$(mktemp -d)"
trap 'kill $PID 2>/dev/null || true; rm -rf "$REPO"' EXIT
mkdir -p "$REPO/fraud/1"
cp models/trees/tests/fixtures/bench/xgb_bench.json "$REPO/fraud/1/model.json"
printf 'platform = "xgboost"\nmax_batch_size = 256\nmax_queue_delay_us = 0\n' > "$REPO/fraud/config.toml"
"$BIN/infermesh" serve --model-repository "$REPO" --host 127.0.0.1 --http-port 0 --grpc-port 0 \
  --metrics-port 0 --poll-interval 0 > "$REPO/serve.out" 2>/dev/null &
PID=$!
for _ in $(seq 100); do grep -q grpc "$REPO/serve.out" 2>/dev/null && break; sleep 0.1; done
GRPC=$(sed -n 's/.*grpc \([^ ]*\) .*/\1/p' "$REPO/serve.out")
echo "server pid $PID grpc $GRPC" >&2
echo "RSS with the model loaded, before load: $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$PID/status)"
for c in 1 32; do
  "$BIN/infermesh-loadgen" --url "http://$GRPC" --features 30 --concurrency $c \
    --connections $(( c < 8 ? c : 8 )) --requests $(( c == 1 ? N : N / 8 ))
done
echo "RSS after load: $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$PID/status); peak $(awk '/VmHWM/ {print $2/1024 " MiB"}' /proc/$PID/status)"
# The product path: typed FraudScoring (probability + 5 TreeSHAP reasons), direct and
# through the JSON gateway.
"$BIN/infermesh" gateway --host 127.0.0.1 --port 0 --metrics-port 0 --inference-url "http://$GRPC" \
  > "$REPO/gw.out" 2>/dev/null &
GW_PID=$!
trap 'kill $PID $GW_PID 2>/dev/null || true; rm -rf "$REPO"' EXIT
for _ in $(seq 100); do grep -q http "$REPO/gw.out" 2>/dev/null && break; sleep 0.1; done
GW=$(sed -n 's/.*http \([^ ]*\) .*/\1/p' "$REPO/gw.out")
for c in 1 32; do
  "$BIN/infermesh-loadgen" --target fraud --url "http://$GRPC" --features 30 --concurrency $c \
    --connections $(( c < 8 ? c : 8 )) --requests $(( c == 1 ? N / 10 : N / 80 ))
  "$BIN/infermesh-loadgen" --target gateway --url "http://$GW" --features 30 --concurrency $c \
    --requests $(( c == 1 ? N / 10 : N / 80 ))
done
