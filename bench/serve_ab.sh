#!/usr/bin/env bash
# Before/after of a serving path against the release binaries of two revisions, alternated
# ROUNDS times (before, after, before, after...) so a drift in the machine's load shows as a
# spread on both sides. WORKLOAD picks the path (default trees):
#   trees: the loads of bench/serve_bench.sh — KServe V2 gRPC one row per request and typed
#          FraudScoring/Score with 5 TreeSHAP reasons, concurrency 1 and 32;
#   text:  the typed loads of bench/text_serve.sh — TextEmbedding/Embed on all-MiniLM-L6-v2
#          (engine auto), one sentence at concurrency 1 and 32, 32 sentences at concurrency 1;
#   recs:  the typed loads of bench/recs_serve.sh — Recommender/Recommend top 10 on the
#          MovieLens 100k model (trained once, by the after binary), concurrency 1 and 32.
# Usage: [WORKLOAD=trees|text|recs] [ROUNDS=2] [BEFORE_FLAGS=...] [AFTER_FLAGS=...]
#   bench/serve_ab.sh BEFORE_BIN_DIR AFTER_BIN_DIR [requests-per-worker]
# BEFORE_FLAGS / AFTER_FLAGS are extra `infermesh serve` flags of each side: with one binary
# dir on both sides they compare configurations (say, the monitor off and on).
# (each dir holds `infermesh`, and the after dir `infermesh-loadgen`, e.g. copies of
# $CARGO_TARGET_DIR/release after `cargo build --release -p infermesh -p infermesh-loadgen`
# at each revision). Both servers are driven by the after dir's load generator, so only the
# server differs. The request count defaults to 20000 (trees, recs) or 300 (text).
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
BEFORE=${1:?before binaries}
AFTER=${2:?after binaries}
WORKLOAD=${WORKLOAD:-trees}
ROUNDS=${ROUNDS:-2}
SHARED=$(mktemp -d)
trap 'rm -rf "$SHARED"' EXIT
case "$WORKLOAD" in
  trees) N=${3:-20000} ;;
  text)
    N=${3:-300}
    source "$(dirname "$0")/../scripts/fetch_models.sh"
    ensure_minilm
    ensure_onnxruntime
    ensure_openvino
    ;;
  recs)
    N=${3:-20000}
    DATA="${INFERMESH_DATA:-$ROOT/../shared/data}/movielens-100k"
    "$AFTER/infermesh" train recs --interactions "$DATA/ua.base" --separator tab --no-header \
      --user-col column_1 --item-col column_2 --weight-col column_3 --min-weight 4 \
      --components 32 --epochs 10 --out "$SHARED/recs" >&2
    ;;
  *) echo "WORKLOAD is trees, text or recs" >&2; exit 2 ;;
esac

# The model repository of the workload, in $1.
repository() {
  local REPO=$1 f
  case "$WORKLOAD" in
    trees)
      mkdir -p "$REPO/fraud/1"
      cp models/trees/tests/fixtures/bench/xgb_bench.json "$REPO/fraud/1/model.json"
      printf 'platform = "xgboost"\nmax_batch_size = 256\nmax_queue_delay_us = 0\n' \
        > "$REPO/fraud/config.toml"
      ;;
    text)
      mkdir -p "$REPO/minilm/1"
      for f in config.json model.safetensors tokenizer.json 1_Pooling; do
        ln -s "$INFERMESH_MODEL_CACHE/all-MiniLM-L6-v2/$f" "$REPO/minilm/1/$f"
      done
      printf 'platform = "bert-embedding"\nengine = "auto"\n' > "$REPO/minilm/config.toml"
      ;;
    recs)
      mkdir -p "$REPO/recs"
      cp -r "$SHARED/recs" "$REPO/recs/1"
      printf 'platform = "recommender"\n' > "$REPO/recs/config.toml"
      ;;
  esac
}

# The workload's loads against the gRPC address $1, labelled $2.
loads() {
  local GRPC=$1 tag=$2 c L BIN=$AFTER
  case "$WORKLOAD" in
    trees)
      for c in 1 32; do
        echo "== $tag grpc c=$c"
        "$BIN/infermesh-loadgen" --url "http://$GRPC" --features 30 --concurrency $c \
          --connections $(( c < 8 ? c : 8 )) --requests $(( c == 1 ? N : N / 8 ))
        echo "== $tag fraud c=$c"
        "$BIN/infermesh-loadgen" --target fraud --url "http://$GRPC" --features 30 \
          --concurrency $c --connections $(( c < 8 ? c : 8 )) \
          --requests $(( c == 1 ? N / 10 : N / 80 ))
      done
      ;;
    text)
      L="$BIN/infermesh-loadgen --target embed --model minilm --url http://$GRPC --warmup 20"
      echo "== $tag embed rows=1 c=1"
      $L --rows 1 --concurrency 1 --requests "$N"
      echo "== $tag embed rows=1 c=32"
      $L --rows 1 --concurrency 32 --connections 8 --requests $(( N / 8 ))
      echo "== $tag embed rows=32 c=1"
      $L --rows 32 --concurrency 1 --requests $(( N / 10 ))
      ;;
    recs)
      for c in 1 32; do
        echo "== $tag recs c=$c"
        "$BIN/infermesh-loadgen" --target recs --model recs --url "http://$GRPC" \
          --concurrency $c --connections $(( c < 8 ? c : 8 )) \
          --requests $(( c == 1 ? N : N / 8 ))
      done
      ;;
  esac
}

run() {
  local BIN=$1 tag=$2 flags=$3 REPO PID GRPC
  REPO=$(mktemp -d)
  repository "$REPO"
  "$BIN/infermesh" serve --model-repository "$REPO" --host 127.0.0.1 --http-port 0 --grpc-port 0 \
    --metrics-port 0 --poll-interval 0 $flags > "$REPO/serve.out" 2>/dev/null &
  PID=$!
  for _ in $(seq 300); do grep -q grpc "$REPO/serve.out" 2>/dev/null && break; sleep 0.1; done
  GRPC=$(sed -n 's/.*grpc \([^ ]*\) .*/\1/p' "$REPO/serve.out")
  loads "$GRPC" "$tag"
  kill "$PID"; wait "$PID" 2>/dev/null || true; rm -rf "$REPO"
}
for _ in $(seq "$ROUNDS"); do
  run "$BEFORE" before "${BEFORE_FLAGS:-}"
  run "$AFTER" after "${AFTER_FLAGS:-}"
done
