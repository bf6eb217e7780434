#!/usr/bin/env bash
# Before/after of the tree serving path: the loads of bench/serve_bench.sh (KServe V2 gRPC one
# row per request, typed FraudScoring/Score with 5 TreeSHAP reasons; concurrency 1 and 32)
# against the release binaries of two revisions, alternated ROUNDS times (before, after,
# before, after...) so a drift in the machine's load shows as a spread on both sides.
# Usage: bench/serve_ab.sh BEFORE_BIN_DIR AFTER_BIN_DIR [requests-per-worker]
# (each dir holds `infermesh` and `infermesh-loadgen`, e.g. copies of
# $CARGO_TARGET_DIR/release after `cargo build --release -p infermesh -p infermesh-loadgen`
# at each revision).
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
BEFORE=${1:?before binaries}
AFTER=${2:?after binaries}
N=${3:-20000}
ROUNDS=${ROUNDS:-2}
run() {
  local BIN=$1 tag=$2 REPO PID GRPC
  REPO=$(mktemp -d)
  mkdir -p "$REPO/fraud/1"
  cp models/trees/tests/fixtures/bench/xgb_bench.json "$REPO/fraud/1/model.json"
  printf 'platform = "xgboost"\nmax_batch_size = 256\nmax_queue_delay_us = 0\n' > "$REPO/fraud/config.toml"
  "$BIN/infermesh" serve --model-repository "$REPO" --host 127.0.0.1 --http-port 0 --grpc-port 0 \
    --metrics-port 0 --poll-interval 0 > "$REPO/serve.out" 2>/dev/null &
  PID=$!
  for _ in $(seq 100); do grep -q grpc "$REPO/serve.out" 2>/dev/null && break; sleep 0.1; done
  GRPC=$(sed -n 's/.*grpc \([^ ]*\) .*/\1/p' "$REPO/serve.out")
  for c in 1 32; do
    echo "== $tag grpc c=$c"
    "$BIN/infermesh-loadgen" --url "http://$GRPC" --features 30 --concurrency $c \
      --connections $(( c < 8 ? c : 8 )) --requests $(( c == 1 ? N : N / 8 ))
    echo "== $tag fraud c=$c"
    "$BIN/infermesh-loadgen" --target fraud --url "http://$GRPC" --features 30 --concurrency $c \
      --connections $(( c < 8 ? c : 8 )) --requests $(( c == 1 ? N / 10 : N / 80 ))
  done
  kill "$PID"; wait "$PID" 2>/dev/null || true; rm -rf "$REPO"
}
for _ in $(seq "$ROUNDS"); do
  run "$BEFORE" before
  run "$AFTER" after
done
