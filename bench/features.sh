#!/usr/bin/env bash
# Online feature serving, side by side over the same Redis and the same rows: Feast 0.67's own
# servers (`feast serve`: HTTP; `feast listen`: gRPC GrpcFeatureServer) and `infermesh features
# serve` (release; both protocols on one port), read by bench/loadgen with 1 and 100 entities x 3
# features at concurrency 1 and 32; p50/p99 and throughput, medians of ROUNDS rounds. Then the
# added cost of store-filled inputs on FraudScoring/Score (the sample fraud model with
# user_avg_spend and device_risk_score from the store vs in the request).
# Feast is installed once into ~/.cache/infermesh/venv-feast (tests/feast/requirements.txt);
# a throw-away redis-server on a free port holds the rows.
# Usage: bench/features.sh [rounds] [requests-per-worker]
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
ROUNDS=${1:-3}
N=${2:-2000}
USERS=10000
ensure_venv venv-feast tests/feast/requirements.txt 'import feast, redis, grpc, pandas'
cargo build --release --locked -p infermesh -p infermesh-loadgen >&2
BIN="$CARGO_TARGET_DIR/release"
WORK="$(mktemp -d)"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --save '' --appendonly no --daemonize no > "$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT"
"$CACHE/venv-feast/bin/python" bench/features_peer.py "$WORK/repo" "127.0.0.1:$REDIS_PORT" "$USERS"

FEAST_HTTP=$(free_port); FEAST_GRPC=$(free_port)
(cd "$WORK/repo" && exec "$CACHE/venv-feast/bin/feast" serve -h 127.0.0.1 -p "$FEAST_HTTP" --no-access-log) > "$WORK/feast-serve.log" 2>&1 &
PIDS+=($!)
(cd "$WORK/repo" && exec "$CACHE/venv-feast/bin/feast" listen --address "127.0.0.1:$FEAST_GRPC") > "$WORK/feast-listen.log" 2>&1 &
PIDS+=($!)
"$BIN/infermesh" features serve --port 0 --registry "$WORK/repo/data/registry.db" --project bench \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" > "$WORK/infermesh.out" 2> "$WORK/infermesh.log" &
PIDS+=($!)
wait_port "$FEAST_HTTP"; wait_port "$FEAST_GRPC"
for _ in $(seq 100); do grep -q 'grpc+http' "$WORK/infermesh.out" 2>/dev/null && break; sleep 0.1; done
OURS=$(sed -n 's/.*grpc+http \(\S*\).*/\1/p' "$WORK/infermesh.out")

run() { # target url rows concurrency -> one JSON line
  local reqs=$(( $4 == 1 ? N : N / 8 ))
  "$BIN/infermesh-loadgen" --target "$1" --url "$2" --rows "$3" --concurrency "$4" --users "$USERS" \
    --requests "$reqs" --warmup 50 --max-seconds 30
}
echo "feature reads, medians of $ROUNDS rounds (p50/p99 in microseconds, throughput in requests/s)"
for proto in http grpc; do
  for rows in 1 100; do
    for c in 1 32; do
      : > "$WORK/feast.jsonl"; : > "$WORK/ours.jsonl"
      for _ in $(seq "$ROUNDS"); do
        if [ $proto = http ]; then
          run feast-http "http://127.0.0.1:$FEAST_HTTP" $rows $c >> "$WORK/feast.jsonl"
          run feast-http "http://$OURS" $rows $c >> "$WORK/ours.jsonl"
        else
          run feast-grpc "http://127.0.0.1:$FEAST_GRPC" $rows $c >> "$WORK/feast.jsonl"
          run feast-grpc "http://$OURS" $rows $c >> "$WORK/ours.jsonl"
        fi
      done
      python3 - "$proto" "$rows" "$c" "$WORK/feast.jsonl" "$WORK/ours.jsonl" <<'PY'
import json, statistics, sys
proto, rows, c, feast, ours = sys.argv[1:]
def med(path, k):
    return statistics.median(json.loads(l)[k] for l in open(path) if l.strip())
def errs(path):
    return sum(json.loads(l)["errors"] for l in open(path) if l.strip())
f = {k: med(feast, k) for k in ("p50_us", "p99_us", "throughput_rps")}
o = {k: med(ours, k) for k in ("p50_us", "p99_us", "throughput_rps")}
print(f"{proto:4} {rows:>3} entities c={c:>2}: feast p50 {f['p50_us']:9.0f} p99 {f['p99_us']:9.0f} "
      f"{f['throughput_rps']:8.0f}/s (errors {errs(feast)}) | infermesh p50 {o['p50_us']:7.0f} "
      f"p99 {o['p99_us']:7.0f} {o['throughput_rps']:8.0f}/s (errors {errs(ours)}) | "
      f"throughput x{o['throughput_rps'] / f['throughput_rps']:.1f}, p99 x{f['p99_us'] / o['p99_us']:.1f}")
PY
    done
  done
done

# The added cost of store-filled inputs on FraudScoring/Score: the sample fraud model, its two
# store-held inputs in the request vs read from the store (the shared features' TOML, the rows
# of users u1..u50 and devices dev-1..dev-20 pushed first).
REPO="$WORK/models"; mkdir -p "$REPO"
cp -r deploy/sample-repository/fraud "$REPO/fraud"
"$BIN/infermesh" serve --model-repository "$REPO" --http-port 0 --grpc-port 0 --metrics-port 0 --poll-interval 0 \
  --features-registry features/repo/features.toml --features-redis-url "redis://127.0.0.1:$REDIS_PORT" \
  > "$WORK/serve.out" 2> "$WORK/serve.log" &
PIDS+=($!)
"$BIN/infermesh" features serve --port 0 --registry features/repo/features.toml \
  --redis-url "redis://127.0.0.1:$REDIS_PORT" > "$WORK/shared.out" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 100); do grep -q grpc "$WORK/serve.out" 2>/dev/null && grep -q grpc "$WORK/shared.out" && break; sleep 0.1; done
GRPC=$(sed -n 's/.*grpc \([^ ]*\) .*/\1/p' "$WORK/serve.out")
SHARED=$(sed -n 's/.*grpc+http \(\S*\).*/\1/p' "$WORK/shared.out")
python3 - "$SHARED" <<'PY'
import json, sys, urllib.request
from datetime import datetime, timezone
t = datetime.now(timezone.utc).isoformat()
def push(source, df):
    req = urllib.request.Request(f"http://{sys.argv[1]}/push", headers={"content-type": "application/json"},
        data=json.dumps({"push_source_name": source, "df": df}).encode())
    assert urllib.request.urlopen(req).status == 200
users = [f"u{i}" for i in range(1, 51)]
push("user_spend_push", {"user_id": users, "user_avg_spend": [20.0 + i for i in range(50)], "event_timestamp": [t] * 50})
devices = [f"dev-{i}" for i in range(1, 21)]
push("device_risk_push", {"device_id": devices, "device_risk_score": [i / 20 for i in range(20)], "event_timestamp": [t] * 20})
PY
echo "FraudScoring/Score, sample model, medians of $ROUNDS rounds (microseconds)"
: > "$WORK/given.jsonl"; : > "$WORK/filled.jsonl"
for _ in $(seq "$ROUNDS"); do
  "$BIN/infermesh-loadgen" --target fraud-sample --url "http://$GRPC" --users 50 --requests "$N" >> "$WORK/given.jsonl"
  "$BIN/infermesh-loadgen" --target fraud-sample --store-fill --url "http://$GRPC" --users 50 --requests "$N" >> "$WORK/filled.jsonl"
done
python3 - "$WORK/given.jsonl" "$WORK/filled.jsonl" <<'PY'
import json, statistics, sys
def med(path, k):
    return statistics.median(json.loads(l)[k] for l in open(path) if l.strip())
g, f = (sys.argv[1], sys.argv[2])
print(f"inputs in the request: p50 {med(g, 'p50_us'):.0f} p99 {med(g, 'p99_us'):.0f} (errors {sum(json.loads(l)['errors'] for l in open(g))})")
print(f"inputs from the store: p50 {med(f, 'p50_us'):.0f} p99 {med(f, 'p99_us'):.0f} (errors {sum(json.loads(l)['errors'] for l in open(f))})")
print(f"added p50: {med(f, 'p50_us') - med(g, 'p50_us'):.0f} us")
PY
