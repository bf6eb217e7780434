#!/usr/bin/env bash
# MiniLM sentence embeddings, side by side on CPU: infermesh (both engines: candle, and ONNX
# Runtime through ort on the graph infermesh exports; models/text/examples/embed_bench.rs)
# against ONNX Runtime (Python) running the same
# all-MiniLM-L6-v2 weights (bench/text_peer.py builds the ONNX graph from model.safetensors,
# plain and through onnxruntime's transformer optimizer). Same corpus (1024 ~12-word sentences,
# written by the peer), same tokenizer.json, tokenisation inside the timings, BENCH_THREADS
# threads (default 2). Prints both sides' JSON and the ratios:
# throughput ours / peer, latency peer / ours (> 1: infermesh is ahead). "peer" is the graph
# with the higher throughput.
source "$(dirname "$0")/../scripts/common.sh"
source "$ROOT/scripts/fetch_models.sh"
cd "$ROOT"
THREADS=${BENCH_THREADS:-2}
MODEL="$INFERMESH_MODEL_CACHE/all-MiniLM-L6-v2"
CORPUS="$CACHE/bench/text_corpus.txt"
PY="$CACHE/venv-text-peer/bin/python"
ensure_minilm
ensure_onnxruntime
ensure_openvino
ensure_venv venv-text-peer bench/requirements-text-peer.txt \
  'import onnxruntime, onnx, numpy, tokenizers, safetensors, sympy, openvino'

log "peer: ONNX Runtime on $THREADS threads (writes the corpus to $CORPUS)"
PEER=$("$PY" bench/text_peer.py --model "$MODEL" --threads "$THREADS" --write-corpus "$CORPUS")
printf '%s\n' "$PEER" >&2
# Not the peer: OpenVINO's own Python binding in bf16, to show what infermesh's OpenVINO
# engine adds to the engine's time (empty on a CPU without native bf16).
SAME=$("$PY" bench/text_peer.py --model "$MODEL" --threads "$THREADS" --graphs openvino-bf16 || true)
printf '%s\n' "$SAME" >&2

log "infermesh: candle and onnxruntime (ort) on $THREADS threads"
# embed_bench also re-runs itself with RAYON_NUM_THREADS=--threads when that is not set.
export RAYON_NUM_THREADS=$THREADS
# One release build of the whole workspace (same feature set for every bench script, so
# switching scripts does not rebuild dependencies with other features).
cargo build --release --locked --workspace --bins --examples >&2
OURS=$("$CARGO_TARGET_DIR/release/examples/embed_bench" \
  --model "$MODEL" --corpus "$CORPUS" --threads "$THREADS" --engine all)
printf '%s\n' "$OURS" >&2

"$PY" - "$PEER" "$OURS" "$SAME" <<'PY'
import json, sys
peers = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip().startswith("{")]
ours_all = [json.loads(l) for l in sys.argv[2].splitlines() if l.strip().startswith("{")]
same = [json.loads(l) for l in sys.argv[3].splitlines() if l.strip().startswith("{")]
T, P50, P99 = "batch32_sentences_per_s_median", "single_p50_ms", "single_p99_ms"
def ratios(ours, p):
    return {"ours": ours["engine"], "peer_graph": p["graph"],
            "throughput_ours_over_peer": round(ours[T] / p[T], 3),
            "p50_peer_over_ours": round(p[P50] / ours[P50], 3),
            "p99_peer_over_ours": round(p[P99] / ours[P99], 3)}
best = max(peers, key=lambda p: p[T])
print(json.dumps({"infermesh": ours_all, "peer": best,
                  "ratios_vs_peer": [ratios(o, best) for o in ours_all],
                  "ratios_per_graph": [ratios(o, p) for o in ours_all for p in peers],
                  "same_engine_openvino_bf16": [ratios(o, p) for o in ours_all for p in same
                                                if o["engine"] == "infermesh-openvino-bf16"]},
                 indent=1))
PY
