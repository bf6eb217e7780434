# Services the tests start themselves (sourced after common.sh).

# start_mlflow: installs MLflow into venv-mlflow (once) and starts `mlflow server` on a free
# 127.0.0.1 port with a fresh SQLite store and proxied local artifacts in a temporary directory;
# exports INFERMESH_TEST_MLFLOW_URI. The server (and its directory) go away when the calling
# shell exits. MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false keeps it to one process.
start_mlflow() {
  ensure_venv venv-mlflow "$ROOT/tests/mlflow/requirements.txt" 'import mlflow, pytest'
  MLFLOW_DIR="$(mktemp -d "${TMPDIR:-/tmp}/infermesh-mlflow.XXXXXX")"
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  log "starting mlflow server on 127.0.0.1:$port (store $MLFLOW_DIR)"
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "$CACHE/venv-mlflow/bin/mlflow" server \
    --host 127.0.0.1 --port "$port" --workers 1 \
    --backend-store-uri "sqlite:///$MLFLOW_DIR/mlflow.db" \
    --artifacts-destination "$MLFLOW_DIR/artifacts" > "$MLFLOW_DIR/server.log" 2>&1 &
  MLFLOW_PID=$!
  trap 'kill "$MLFLOW_PID" 2>/dev/null; wait "$MLFLOW_PID" 2>/dev/null; rm -rf "$MLFLOW_DIR"' EXIT
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
