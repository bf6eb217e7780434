#!/usr/bin/env bash
# The sentiment family's LLM answer cache (issue 24: identical review text is never sent to the
# LLM twice): a stream of REVIEWS reviews drawn (seed SEED) from DISTINCT distinct texts goes
# through the family's zero-shot LLM arm (models/sentiment/examples/llm_cache_hit_rate.rs:
# sanitiser, cache, single flight, admission, CONCURRENCY reviews at once) against the
# embedded SmolLM2-135M-Instruct (`infermesh llm serve` in process, from the model cache;
# LLM_URL=URL asks another Ollama API, STUB=1 a counting stub instead). Prints the hit rate,
# the LLM calls (they must equal the distinct texts drawn; the run fails otherwise) and the
# latency percentiles of a hit, a miss and a text that waited on an identical call in flight.
# CACHE_URL=redis://... keeps the cache in Redis instead of memory.
# PROFILE=dev uses a debug build (quicker to build; fine for hit rate and calls, not latency).
set -euo pipefail
HERE="$(dirname "$0")"
source "$HERE/../scripts/common.sh"
source "$HERE/../scripts/fetch_models.sh"
cd "$ROOT"
PROFILE="${PROFILE:-release}"
ARGS=(--reviews "${REVIEWS:-2000}" --distinct "${DISTINCT:-400}" --seed "${SEED:-42}"
      --concurrency "${CONCURRENCY:-4}")
[ -n "${LLM_URL:-}" ] && ARGS+=(--url "$LLM_URL")
[ "${STUB:-0}" = 1 ] && ARGS+=(--stub)
[ -n "${CACHE_URL:-}" ] && ARGS+=(--cache-url "$CACHE_URL")
[ -z "${LLM_URL:-}" ] && [ "${STUB:-0}" != 1 ] && ensure_smollm2
if [ "$PROFILE" = release ]; then
  # One release build of the whole workspace (the feature set every bench script shares).
  cargo build --release --locked --workspace --bins --examples >&2
  EXAMPLE="$CARGO_TARGET_DIR/release/examples/llm_cache_hit_rate"
else
  cargo build --locked --workspace --all-targets >&2
  EXAMPLE="$CARGO_TARGET_DIR/debug/examples/llm_cache_hit_rate"
fi
log "sentiment LLM cache: ${ARGS[*]} ($PROFILE build)"
"$EXAMPLE" "${ARGS[@]}"
