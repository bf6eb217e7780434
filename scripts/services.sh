# Services the tests start themselves (sourced after common.sh).

# Cleanups run when the calling shell exits (also on Ctrl-C or SIGTERM), last added first.
# One EXIT trap runs them all: a service adds its cleanup with add_cleanup instead of setting
# a trap of its own, which would replace the others'.
CLEANUPS=()
run_cleanups() {
  local i
  for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do
    eval "${CLEANUPS[i]}" || true
  done
  CLEANUPS=()
}
add_cleanup() {
  CLEANUPS+=("$1")
  trap run_cleanups EXIT
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on (the caller binds it next).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_mlflow: installs MLflow into venv-mlflow (once) and starts `mlflow server` on a free
# 127.0.0.1 port with a fresh SQLite store and proxied local artifacts in a temporary directory;
# exports INFERMESH_TEST_MLFLOW_URI. The server (and its directory) go away when the calling
# shell exits. MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false keeps it to one process.
start_mlflow() {
  ensure_venv venv-mlflow "$ROOT/tests/mlflow/requirements.txt" 'import mlflow, pytest'
  MLFLOW_DIR="$(mktemp -d "${TMPDIR:-/tmp}/infermesh-mlflow.XXXXXX")"
  local port
  port="$(free_port)"
  log "starting mlflow server on 127.0.0.1:$port (store $MLFLOW_DIR)"
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "$CACHE/venv-mlflow/bin/mlflow" server \
    --host 127.0.0.1 --port "$port" --workers 1 \
    --backend-store-uri "sqlite:///$MLFLOW_DIR/mlflow.db" \
    --artifacts-destination "$MLFLOW_DIR/artifacts" > "$MLFLOW_DIR/server.log" 2>&1 &
  MLFLOW_PID=$!
  add_cleanup 'kill "$MLFLOW_PID" 2>/dev/null; wait "$MLFLOW_PID" 2>/dev/null; rm -rf "$MLFLOW_DIR"'
  local i
  for i in $(seq 1 240); do
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
      export INFERMESH_TEST_MLFLOW_URI="http://127.0.0.1:$port"
      export INFERMESH_TEST_MLFLOW_RECORD="$MLFLOW_DIR/record"
      return 0
    fi
    if ! kill -0 "$MLFLOW_PID" 2>/dev/null; then break; fi
    sleep 0.5
  done
  tail -30 "$MLFLOW_DIR/server.log" >&2
  echo "mlflow server did not come up" >&2
  return 1
}

# redis_ping PORT: whether a Redis on 127.0.0.1:PORT answers PING (with redis-cli when there
# is one, else over bash's /dev/tcp); gives up after 2 s on a port that accepts and never
# answers.
redis_ping() {
  local port=$1
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]
  else
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "PING\r\n" >&3 &&
      IFS= read -r reply <&3 && [[ $reply == +PONG* ]]' _ "$port" 2>/dev/null
  fi
}

# start_redis_if_needed: the gateway's tests need a Redis (INFERMESH_TEST_REDIS_URL). A URL the
# caller exported wins; else a Redis answering PING on 127.0.0.1:6379 is used; else
# redis-server (Debian's package, installed when missing) runs on a free 127.0.0.1 port with
# nothing saved to disk, in a temporary directory, until the calling shell exits. Exports
# INFERMESH_TEST_REDIS_URL.
start_redis_if_needed() {
  if [ -n "${INFERMESH_TEST_REDIS_URL:-}" ]; then
    log "Redis for the tests: $INFERMESH_TEST_REDIS_URL (INFERMESH_TEST_REDIS_URL)"
    return 0
  fi
  if redis_ping 6379; then
    export INFERMESH_TEST_REDIS_URL="redis://127.0.0.1:6379"
    log "Redis for the tests: the one answering on 127.0.0.1:6379"
    return 0
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server (Debian; for the gateway's tests)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null \
      || { $sudo apt-get update -q >/dev/null \
        && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null; }
  fi
  REDIS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/infermesh-redis.XXXXXX")"
  add_cleanup 'rm -rf "$REDIS_DIR"'
  REDIS_PID=""
  add_cleanup '[ -z "$REDIS_PID" ] || { kill "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; }'
  local port attempt i
  # A free port can be taken before redis-server binds it: then another one.
  for attempt in 1 2 3; do
    port="$(free_port)"
    log "starting redis-server on 127.0.0.1:$port (no persistence; $REDIS_DIR)"
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --daemonize no \
      --dir "$REDIS_DIR" > "$REDIS_DIR/server.log" 2>&1 &
    REDIS_PID=$!
    for i in $(seq 1 100); do
      if redis_ping "$port"; then
        export INFERMESH_TEST_REDIS_URL="redis://127.0.0.1:$port"
        return 0
      fi
      if ! kill -0 "$REDIS_PID" 2>/dev/null; then break; fi
      sleep 0.1
    done
    tail -20 "$REDIS_DIR/server.log" >&2
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
  done
  echo "redis-server did not come up" >&2
  return 1
}

# start_kafka_broker: a nisshi broker (memory storage; scripts/common.sh ensure_nisshi) on a
# free 127.0.0.1 port until the calling shell exits, for the streaming pipelines' end-to-end
# tests; a broker the caller names in INFERMESH_TEST_KAFKA_BROKERS wins. Exports
# INFERMESH_TEST_KAFKA_BROKERS and INFERMESH_KAFKA_BROKER_BIN (the tests start brokers of their
# own with it, e.g. to restart one and check that the pipeline resumes).
start_kafka_broker() {
  export INFERMESH_KAFKA_BROKER_BIN="$CACHE/bin/nisshi"
  if [ -n "${INFERMESH_TEST_KAFKA_BROKERS:-}" ]; then
    log "Kafka for the tests: $INFERMESH_TEST_KAFKA_BROKERS (INFERMESH_TEST_KAFKA_BROKERS)"
    return 0
  fi
  BROKER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/infermesh-broker.XXXXXX")"
  add_cleanup 'rm -rf "$BROKER_DIR"'
  BROKER_PID=""
  add_cleanup '[ -z "$BROKER_PID" ] || { kill "$BROKER_PID" 2>/dev/null; wait "$BROKER_PID" 2>/dev/null; }'
  local port attempt i
  for attempt in 1 2 3; do
    port="$(free_port)"
    log "starting nisshi on 127.0.0.1:$port (memory storage)"
    "$INFERMESH_KAFKA_BROKER_BIN" broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ \
      > "$BROKER_DIR/broker.log" 2>&1 &
    BROKER_PID=$!
    for i in $(seq 1 100); do
      if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
        export INFERMESH_TEST_KAFKA_BROKERS="127.0.0.1:$port"
        return 0
      fi
      if ! kill -0 "$BROKER_PID" 2>/dev/null; then break; fi
      sleep 0.1
    done
    tail -20 "$BROKER_DIR/broker.log" >&2
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
  done
  echo "nisshi did not come up" >&2
  return 1
}

# start_postgres_if_needed: the reviews pipeline's tests need a PostgreSQL
# (INFERMESH_TEST_DATABASE_URL). A URL the caller exported wins; else a server accepting
# connections on 127.0.0.1:5432 is used (the tests then connect as postgres); else Debian's
# PostgreSQL binaries (package postgresql, installed when missing) run a throw-away cluster
# (initdb, trust auth, no fsync) on a free 127.0.0.1 port in a temporary directory, as the
# postgres user when the script runs as root, until the calling shell exits. Exports
# INFERMESH_TEST_DATABASE_URL.
start_postgres_if_needed() {
  if [ -n "${INFERMESH_TEST_DATABASE_URL:-}" ]; then
    log "PostgreSQL for the tests: $(echo "$INFERMESH_TEST_DATABASE_URL" | sed 's#//[^@]*@#//***@#') (INFERMESH_TEST_DATABASE_URL)"
    return 0
  fi
  if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
    export INFERMESH_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
    log "PostgreSQL for the tests: the one answering on 127.0.0.1:5432"
    return 0
  fi
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$bin" ]; then
    log "installing postgresql (Debian; for the reviews pipeline's tests)"
    apt_install postgresql
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  fi
  PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/infermesh-postgres.XXXXXX")"
  add_cleanup 'rm -rf "$PG_DIR"'
  local as=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$PG_DIR"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  local port
  port="$(free_port)"
  log "starting PostgreSQL on 127.0.0.1:$port (throw-away cluster in $PG_DIR)"
  "${as[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
    -o "-h 127.0.0.1 -p $port -k $PG_DIR -F" start >/dev/null \
    || { tail -20 "$PG_DIR/server.log" >&2; return 1; }
  add_cleanup "${as[*]} \"$bin/pg_ctl\" -D \"$PG_DIR/data\" -m fast stop >/dev/null 2>&1 || true"
  export INFERMESH_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}
