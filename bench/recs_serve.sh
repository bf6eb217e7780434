#!/usr/bin/env bash
# Recommender serving latency: trains the MovieLens 100k model (ua.base, ratings >= 4, WARP,
# 32 components), serves it with `infermesh serve` (release) and drives the typed
# Recommender/Recommend (top 10) with bench/loadgen at concurrency 1 and 32, then the gateway
# route (in-memory cache) with a cache hit every time and a miss every time; after each typed
# run it also prints the server-side latency from the server's own histogram. Data:
# $INFERMESH_DATA/movielens-100k. Usage: bench/recs_serve.sh [requests-per-worker]
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
N=${1:-20000}
DATA="${INFERMESH_DATA:-$ROOT/../shared/data}/movielens-100k"
cargo build --release --locked --workspace --bins --examples >&2
BIN="$CARGO_TARGET_DIR/release"
REPO="$(mktemp -d)"
trap 'kill $PID ${GW_PID:-} 2>/dev/null || true; rm -rf "$REPO"' EXIT
"$BIN/infermesh" train recs --interactions "$DATA/ua.base" --separator tab --no-header \
  --user-col column_1 --item-col column_2 --weight-col column_3 --min-weight 4 \
  --components 32 --epochs 10 --out "$REPO/recs/1" >&2
printf 'platform = "recommender"\n' > "$REPO/recs/config.toml"
"$BIN/infermesh" serve --model-repository "$REPO" --host 127.0.0.1 --http-port 0 --grpc-port 0 \
  --metrics-port 0 --poll-interval 0 > "$REPO/serve.out" 2>/dev/null &
PID=$!
for _ in $(seq 100); do grep -q grpc "$REPO/serve.out" 2>/dev/null && break; sleep 0.1; done
GRPC=$(sed -n 's/.*grpc \([^ ]*\) .*/\1/p' "$REPO/serve.out")
echo "RSS with the model loaded: $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$PID/status)"
METRICS=$(sed -n 's/.*metrics \([^ ]*\).*/\1/p' "$REPO/serve.out")
# The server's own view: its request histogram (infermesh_inference_request_duration_seconds,
# typed gRPC, model recs), read after each concurrency level, differenced.
server_hist() { curl -s "http://$METRICS/metrics" | grep '^infermesh_inference_request_duration_seconds_bucket' | grep 'model="recs"' || true; }
server_p99() {
  python3 - "$1" "$2" <<'PY'
import re, sys
def read(path):
    out = {}
    for line in open(path):
        m = re.search(r'le="([^"]+)"\} (\S+)', line)
        if m:
            le = float('inf') if m.group(1) == '+Inf' else float(m.group(1))
            out[le] = out.get(le, 0) + float(m.group(2))
    return out
before, after = read(sys.argv[1]), read(sys.argv[2])
d = sorted((le, after[le] - before.get(le, 0)) for le in after)
total = d[-1][1]
under_1ms = next(c for le, c in d if le >= 0.001)
p99 = next(le for le, c in d if c >= 0.99 * total)
p50 = next(le for le, c in d if c >= 0.5 * total)
print(f"  server-side: {int(total)} requests, {100 * under_1ms / total:.2f}% within 1 ms; "
      f"p50 <= {p50 * 1e3:g} ms, p99 <= {p99 * 1e3:g} ms (histogram bucket bounds)")
PY
}
for c in 1 32; do
  server_hist > "$REPO/hist.before"
  "$BIN/infermesh-loadgen" --target recs --model recs --url "http://$GRPC" --concurrency $c \
    --connections $(( c < 8 ? c : 8 )) --requests $(( c == 1 ? N : N / 8 ))
  server_hist > "$REPO/hist.after"
  server_p99 "$REPO/hist.before" "$REPO/hist.after"
done
"$BIN/infermesh" gateway --host 127.0.0.1 --port 0 --metrics-port 0 --inference-url "http://$GRPC" \
  > "$REPO/gw.out" 2>/dev/null &
GW_PID=$!
for _ in $(seq 100); do grep -q http "$REPO/gw.out" 2>/dev/null && break; sleep 0.1; done
GW=$(sed -n 's/.*http \([^ ]*\) .*/\1/p' "$REPO/gw.out")
for c in 1 32; do
  "$BIN/infermesh-loadgen" --target gateway-recs-hit --url "http://$GW" --concurrency $c \
    --requests $(( c == 1 ? N / 4 : N / 32 ))
  "$BIN/infermesh-loadgen" --target gateway-recs-miss --url "http://$GW" --concurrency $c \
    --requests $(( c == 1 ? N / 4 : N / 32 )) --warmup 0
done
