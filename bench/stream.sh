#!/usr/bin/env bash
# The fraud pipeline end to end on this machine: transactions produced to finance.transactions
# on a nisshi broker (memory storage), `infermesh pipeline fraud` (release, in-process scoring of
# the sample model, stream state in a throw-away Redis), alerts consumed from fraud.alerts by
# bench/loadgen's `streamload` (a tail consumer timing each alert from its transaction's send).
#   1. latency at a fixed rate (1k tx/s, every transaction alerted): p50/p99, medians of ROUNDS;
#   2. the highest sustained rate: COUNT transactions as fast as the producer goes, 1% risky;
#   3. the pipeline's peak RSS over the run;
#   4. PostgreSQL insert -> alert on the gateway's SSE stream: a throw-away PostgreSQL cluster
#      with wal_level=logical, `infermesh cdc postgres` into the same broker, `infermesh
#      gateway --kafka-brokers`, and bench/loadgen's `cdcload` inserting 200 rows/s (each its
#      own transaction) and timing each alert from its insert; p50/p99, medians of ROUNDS.
# Each round runs on a fresh broker with a fresh pipeline (and, for 4., cdc and gateway): tansu's
# memory storage slowed as runs accumulated on one broker, and a round should not pay for the
# ones before it on any broker.
# Goals (issue): p99 < 10 ms at 1k tx/s, >= 20k tx/s on 2 cores, RSS < 100 MB, insert -> SSE
# p99 < 50 ms.
# nisshi is built once into ~/.cache/infermesh/bin (scripts/common.sh ensure_nisshi).
# Usage: [PIPELINE_FLAGS="--max-batch 2048"] [STREAMLOAD_FLAGS="--fetch-wait-ms 1"] [SKIP_CDC=1]
#        [STREAM_BROKER=/path/to/tansu|mock] bench/stream.sh [rounds] [count]
# (PIPELINE_FLAGS: extra flags of `infermesh pipeline fraud`, STREAMLOAD_FLAGS of streamload, to
# compare settings; SKIP_CDC=1 leaves out the PostgreSQL -> SSE rounds; STREAM_BROKER: another
# broker binary taking the same `broker` flags, e.g. tansu 0.6, nisshi's predecessor; `mock`:
# bench/loadgen's mockbroker, librdkafka's in-memory mock cluster, whose fetch cost does not grow
# with the topic, to tell the pipeline's latency from the broker's. The mock answers an empty
# fetch after its whole fetch.wait.max.ms: STREAMLOAD_FLAGS="--fetch-wait-ms 1" and
# PIPELINE_FLAGS="--kafka-option fetch.wait.max.ms=1" shorten that wait on both consumers.)
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
ROUNDS=${1:-3}
COUNT=${2:-100000}
ensure_nisshi
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
REPO="$WORK/repo"
mkdir -p "$REPO"
cp -r deploy/sample-repository/fraud "$REPO/fraud"

# Every round gets a fresh broker and a fresh pipeline: tansu 0.6's memory storage slowed as runs
# accumulated on one broker (a hop's p50 went 10 -> 98 ms over six 10k-message runs), which would
# make each round pay for the ones before it.
ROUND_PIDS=()
PEAK_RSS=0
stop_round() {
  if [ -n "${PIPE:-}" ] && [ -r "/proc/$PIPE/status" ]; then
    local rss; rss=$(awk '/VmHWM/ {print $2}' "/proc/$PIPE/status")
    if [ "${rss:-0}" -gt "$PEAK_RSS" ]; then PEAK_RSS=$rss; fi
  fi
  # The broker (first) goes last: a pipeline stopped together with its broker waits for it to
  # commit its offsets.
  if [ "${#ROUND_PIDS[@]}" -gt 1 ]; then
    kill "${ROUND_PIDS[@]:1}" 2>/dev/null || true
    wait "${ROUND_PIDS[@]:1}" 2>/dev/null || true
  fi
  if [ "${#ROUND_PIDS[@]}" -gt 0 ]; then
    kill "${ROUND_PIDS[0]}" 2>/dev/null || true
    wait "${ROUND_PIDS[0]}" 2>/dev/null || true
  fi
  ROUND_PIDS=()
  PIPE=""
}
start_round() {
  stop_round
  # A fresh broker numbers offsets from 0 again, and a message without a message-id header is
  # deduplicated by topic/partition/offset: the pipeline's Redis starts empty too.
  redis-cli -p "$REDIS_PORT" flushall > /dev/null
  if [ "${STREAM_BROKER:-}" = mock ]; then
    rm -f "$WORK/broker.out"
    "$BIN/mockbroker" > "$WORK/broker.out" 2> "$WORK/broker.log" &
    ROUND_PIDS+=($!); PIDS+=($!)
    for _ in $(seq 100); do grep -q '^brokers ' "$WORK/broker.out" 2>/dev/null && break; sleep 0.1; done
    BROKERS="$(sed -n 's/^brokers //p' "$WORK/broker.out")"
    [ -n "$BROKERS" ] || { cat "$WORK/broker.log" >&2; echo "mockbroker did not start" >&2; exit 1; }
  else
    KAFKA_PORT=$(free_port)
    "${STREAM_BROKER:-$CACHE/bin/nisshi}" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine memory://tansu/ \
      > "$WORK/broker.log" 2>&1 &
    ROUND_PIDS+=($!); PIDS+=($!)
    wait_port "$KAFKA_PORT"
    BROKERS="127.0.0.1:$KAFKA_PORT"
    "$BIN/infermesh" kafka init --kafka-brokers "$BROKERS" > /dev/null
  fi
  "$BIN/infermesh" pipeline fraud --kafka-brokers "$BROKERS" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
    --model-repository "$REPO" --metrics-port 0 --poll-interval 0 ${PIPELINE_FLAGS:-} \
    > "$WORK/pipeline.out" 2> "$WORK/pipeline.log" &
  PIPE=$!
  ROUND_PIDS+=($PIPE); PIDS+=($PIPE)
  for _ in $(seq 100); do grep -q metrics "$WORK/pipeline.out" 2>/dev/null && break; sleep 0.1; done
}

echo "fraud pipeline through Kafka ($(basename "${STREAM_BROKER:-nisshi}")), this machine: $(nproc) cores"
: > "$WORK/fixed.jsonl"
: > "$WORK/pipeline-fixed.prom"
for r in $(seq "$ROUNDS"); do
  start_round
  "$BIN/streamload" --brokers "$BROKERS" --rate 1000 --count 20000 --alert-every 1 --tag "fixed-$r" \
    ${STREAMLOAD_FLAGS:-} >> "$WORK/fixed.jsonl"
  # Where the time goes: the pipeline's own batch processing and its consumed -> processed
  # latency (from each message's broker timestamp), summed over the fixed-rate rounds.
  curl -s "http://$(sed -n 's/.*metrics //p' "$WORK/pipeline.out" | head -n 1)/metrics" \
    >> "$WORK/pipeline-fixed.prom" || true
done
: > "$WORK/max.jsonl"
for r in $(seq "$ROUNDS"); do
  start_round
  "$BIN/streamload" --brokers "$BROKERS" --rate 0 --count "$COUNT" --alert-every 100 --tag "max-$r" \
    --drain-seconds 300 ${STREAMLOAD_FLAGS:-} >> "$WORK/max.jsonl"
done
stop_round
PIPE_RSS=$PEAK_RSS

# 4. PostgreSQL insert -> SSE.
: > "$WORK/cdc.jsonl"
if [ -z "${SKIP_CDC:-}" ]; then
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -n "$PGBIN" ] || apt_install postgresql
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
PGDIR="$(mktemp -d "${TMPDIR:-/tmp}/infermesh-bench-pg.XXXXXX")"
AS=()
if [ "$(id -u)" -eq 0 ]; then chown postgres "$PGDIR"; AS=(runuser -u postgres --); fi
trap 'kill "${PIDS[@]}" 2>/dev/null || true; "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1; rm -rf "$WORK" "$PGDIR"' EXIT
"${AS[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust --no-sync > "$PGDIR/initdb.log"
PG_PORT=$(free_port)
"${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w \
  -o "-h 127.0.0.1 -p $PG_PORT -k $PGDIR -c wal_level=logical -c synchronous_commit=on" start > /dev/null
DB="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
for r in $(seq "$ROUNDS"); do
  start_round
  rm -f "$WORK/cdc.out"
  "$BIN/infermesh" cdc postgres --kafka-brokers "$BROKERS" --database-url "$DB" --metrics-port 0 \
    > "$WORK/cdc.out" 2> "$WORK/cdc.log" &
  ROUND_PIDS+=($!); PIDS+=($!)
  GW_PORT=$(free_port)
  "$BIN/infermesh" gateway --port "$GW_PORT" --metrics-port 0 --kafka-brokers "$BROKERS" \
    > "$WORK/gateway.out" 2> "$WORK/gateway.log" &
  ROUND_PIDS+=($!); PIDS+=($!)
  wait_port "$GW_PORT"
  for _ in $(seq 300); do grep -q metrics "$WORK/cdc.out" 2>/dev/null && break; sleep 0.1; done
  "$BIN/cdcload" --database-url "$DB" --gateway "http://127.0.0.1:$GW_PORT" --rate 200 --count 4000 \
    --tag "cdc$r" >> "$WORK/cdc.jsonl"
done
stop_round
fi

python3 - "$WORK/fixed.jsonl" "$WORK/max.jsonl" "$PIPE_RSS" "$WORK/cdc.jsonl" "$WORK/pipeline-fixed.prom" <<'PY'
import json, re, statistics, sys
def mean_of(text, name):
    total = count = 0.0
    for line in text.splitlines():
        m = re.match(name + r'_(sum|count)\{[^}]*pipeline="fraud"[^}]*\} (\S+)', line)
        if m:
            if m.group(1) == "sum": total += float(m.group(2))
            else: count += float(m.group(2))
    return total / count if count else float("nan"), count
prom = open(sys.argv[5]).read()
batch_s, batches = mean_of(prom, "infermesh_pipeline_processing_seconds")
size, _ = mean_of(prom, "infermesh_pipeline_batch_size")
e2e_s, _ = mean_of(prom, "infermesh_pipeline_end_to_end_seconds")
print(f"pipeline during the fixed-rate rounds: {batches:.0f} batches of {size:.1f} on average, "
      f"{batch_s * 1000:.2f} ms each; broker timestamp -> processed {e2e_s * 1000:.1f} ms on average")
fixed = [json.loads(l) for l in open(sys.argv[1])]
mx = [json.loads(l) for l in open(sys.argv[2])]
cdc = [json.loads(l) for l in open(sys.argv[4])]
med = lambda rows, k: statistics.median(r[k] for r in rows)
print(f"1k tx/s, every transaction alerted: p50 {med(fixed, 'p50_ms'):.2f} ms, p99 {med(fixed, 'p99_ms'):.2f} ms, "
      f"max {med(fixed, 'max_ms'):.1f} ms (alerts {[r['alerts'] for r in fixed]} of {fixed[0]['expected_alerts']})")
print(f"as fast as produced, 1% alerted: sustained {med(mx, 'sustained_tx_per_s'):.0f} tx/s "
      f"(rounds {[round(r['sustained_tx_per_s']) for r in mx]}; send rate {med(mx, 'send_rate'):.0f}/s), "
      f"alert p99 {med(mx, 'p99_ms'):.0f} ms")
print(f"pipeline peak RSS {int(sys.argv[3]) / 1024:.0f} MB")
if cdc: print(f"PostgreSQL insert -> SSE alert at 200 inserts/s: p50 {med(cdc, 'p50_ms'):.1f} ms, p99 {med(cdc, 'p99_ms'):.1f} ms, "
      f"max {med(cdc, 'max_ms'):.1f} ms (alerts {[r['alerts'] for r in cdc]} of {cdc[0]['expected_alerts']})")
PY
