#!/usr/bin/env bash
# Review sentiment, both of the sentiment family's models against the issue's baseline, on the
# UCI sentiment-labelled sentences (amazon, yelp, imdb: 3,000 sentences, negative/positive),
# one fixed stratified 75/25 split (seed 0; SEEDS lists others):
# 1. the local classifier, `infermesh train sentiment` with its default flags (the
#    categoriser's trainer: probe on frozen all-MiniLM-L6-v2 sentence embeddings blended with a
#    TF-IDF lexical head), against TF-IDF (char_wb 2-5 grams + word unigrams) + scikit-learn
#    LogisticRegression(C=10). This is bench/categorizer.sh with CATEGORIZER_DATA=sentiment:
#    the same split, peer, paired bootstrap and McNemar test; INFERMESH_BIN and
#    CATEGORIZER_FLAGS work as there.
# 2. the LLM's zero-shot answer, as the family asks it (sanitised text, the labels as a
#    JSON-schema enum, greedy; models/sentiment/examples/zeroshot_eval.rs), from
#    `infermesh llm serve` (SmolLM2-135M-Instruct Q4_1 unless LLM_MODEL names another GGUF or
#    Ollama model and LLM_URL another server), on the first split's test rows (LLM_LIMIT=N
#    scores only N of them). LLM_ARM=0 skips it. An invalid answer counts as wrong.
# Data: $INFERMESH_DATA/sentiment-labelled-sentences (see its PROVENANCE.md).
set -euo pipefail
HERE="$(dirname "$0")"
CATEGORIZER_DATA=sentiment SEEDS="${SEEDS:-0}" bash "$HERE/categorizer.sh" "$@"
[ "${LLM_ARM:-1}" = 0 ] && exit 0
source "$HERE/../scripts/common.sh"
cd "$ROOT"
FIRST_SEED=$(echo "${SEEDS:-0}" | awk '{print $1}')
TEST="$CACHE/bench-categorizer-sentiment/seed$FIRST_SEED/test.csv"
if [ -n "${INFERMESH_BIN:-}" ]; then
  # A built binary: the example beside it (INFERMESH_EXAMPLES_DIR, else <its dir>/examples).
  EVAL="${INFERMESH_EXAMPLES_DIR:-$(dirname "$INFERMESH_BIN")/examples}/zeroshot_eval"
else
  # One release build of the whole workspace (the feature set every bench script shares).
  cargo build --release --locked --workspace --bins --examples >&2
  EVAL="$CARGO_TARGET_DIR/release/examples/zeroshot_eval"
fi
BIN="${INFERMESH_BIN:-$CARGO_TARGET_DIR/release/infermesh}"
URL="${LLM_URL:-}"
SERVER=
if [ -z "$URL" ]; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$BIN" llm serve --port "$PORT" --embed-model none ${LLM_MODEL:+--model "$LLM_MODEL"} >&2 &
  SERVER=$!
  trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true' EXIT
  URL="http://127.0.0.1:$PORT"
  for _ in $(seq 1 120); do
    curl -sf "$URL/api/version" >/dev/null && break
    sleep 0.5
  done
fi
log "LLM zero-shot arm: ${LLM_MODEL:-smollm2:135m} at $URL on $TEST"
"$EVAL" --data "$TEST" --text-column description --label-column label --url "$URL" \
  --model "$(basename "${LLM_MODEL:-smollm2:135m}" .gguf)" --limit "${LLM_LIMIT:-0}" \
  --predictions "$CACHE/bench-categorizer-sentiment/seed$FIRST_SEED/predictions_llm.csv" 2>/dev/null
