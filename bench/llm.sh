#!/usr/bin/env bash
# Embedded LLM speed, side by side with llama.cpp (llama-cpp-python 0.3.36, bench/llm_peer.py) on
# the same GGUF (SmolLM2-135M-Instruct Q4_1, fetched by scripts/fetch_models.sh), the same prompt
# token ids (bench/llm_prompts.json rendered through the model's chat template and tokenized by
# infermesh: `llm_bench tokenize`), greedy decoding with no repeat penalty, up to num_predict
# tokens or the end-of-generation token, THREADS threads (default 2: RAYON_NUM_THREADS for
# candle, n_threads / n_threads_batch for llama.cpp). Per round (ROUNDS, default 3) each side runs
# every prompt once in a fresh process after one untimed warm-up generation, infermesh first for
# each of WEIGHTS (default "as-stored q8_0 f32": as stored is the server's default), then
# llama.cpp. Prints per prompt the medians over the rounds of prompt processing tokens/s,
# generation tokens/s and time to first token, the ratios infermesh / llama.cpp (> 1: infermesh
# is ahead; for the time to first token llama.cpp / infermesh), whether both generated the same
# tokens, and the load average at each step. Definitions (the same clocks on both sides): prompt
# tokens / prompt evaluation time; generated tokens (end token included) / time from the end of
# the prompt to the last token; time to first token from the start of the prompt evaluation.
# llama.cpp is built from source by pip (minutes, once, cached in
# ~/.cache/infermesh/venv-llama-cpp) with CMAKE_ARGS (default below: AVX2, FMA, F16C, no
# -march=native, whose build died with "illegal instruction" on these VMs) and the CMake of
# venv-build on PATH. INFERMESH_EXAMPLES_DIR uses that directory's llm_bench instead of building.
source "$(dirname "$0")/../scripts/common.sh"
source "$ROOT/scripts/fetch_models.sh"
cd "$ROOT"
ensure_smollm2
MODEL="${LLM_BENCH_MODEL:-$INFERMESH_MODEL_CACHE/smollm2-135m-instruct/model.gguf}"
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
WEIGHTS=${WEIGHTS:-as-stored q8_0 f32}
WORK="$CACHE/bench-llm"
mkdir -p "$WORK"

export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
PATH="$CACHE/venv-build/bin:$PATH" ensure_venv venv-llama-cpp bench/requirements-llm-peer.txt 'import llama_cpp'
PY="$CACHE/venv-llama-cpp/bin/python"

if [ -n "${INFERMESH_EXAMPLES_DIR:-}" ]; then
  BENCH="$INFERMESH_EXAMPLES_DIR/llm_bench"
else
  cargo build --release --locked -p infermesh-llm --example llm_bench >&2
  BENCH="$CARGO_TARGET_DIR/release/examples/llm_bench"
fi

"$BENCH" tokenize "$MODEL" bench/llm_prompts.json > "$WORK/prompts.json"
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"
load() { cut -d' ' -f1-3 /proc/loadavg; }
tag() { "$PY" -c 'import json,sys
for line in sys.stdin:
    if line.strip():
        r = json.loads(line); r["round"] = int(sys.argv[1]); r["load"] = sys.argv[2]; print(json.dumps(r))' "$@"; }
for round in $(seq 1 "$ROUNDS"); do
  for w in $WEIGHTS; do
    log "round $round: infermesh, weights $w (load $(load))"
    RAYON_NUM_THREADS=$THREADS "$BENCH" run "$MODEL" "$WORK/prompts.json" "$w" | tag "$round" "$(load)" >> "$RESULTS"
  done
  log "round $round: llama.cpp (load $(load))"
  "$PY" bench/llm_peer.py "$MODEL" "$WORK/prompts.json" "$THREADS" | tag "$round" "$(load)" >> "$RESULTS"
done

"$PY" - "$RESULTS" "$THREADS" <<'PY'
import json, statistics as st, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"SmolLM2-135M-Instruct Q4_1, greedy, {sys.argv[2]} threads, medians over "
      f"{len({r['round'] for r in rows})} rounds (infermesh / llama.cpp > 1: infermesh ahead)")
groups = {}
for r in rows:
    groups.setdefault((r["name"], r["side"], r["weights"]), []).append(r)
def med(rs):
    return {"prompt_tps": st.median(r["prompt_tokens"] / r["prompt_seconds"] for r in rs),
            "gen_tps": st.median(r["gen_tokens"] / r["gen_seconds"] for r in rs),
            "ttft_ms": 1e3 * st.median(r["ttft_seconds"] for r in rs),
            "prompt_tokens": rs[0]["prompt_tokens"], "gen_tokens": rs[0]["gen_tokens"],
            "tokens": rs[0]["tokens"]}
summary = {}
print(f"{'prompt':24} {'side':10} {'weights':9} {'prompt tok':>10} {'prompt tok/s':>12} {'gen tok':>7} "
      f"{'gen tok/s':>9} {'TTFT ms':>8}")
for (name, side, w), rs in groups.items():
    m = med(rs)
    summary[(name, side, w)] = m
    print(f"{name:24} {side:10} {w:9} {m['prompt_tokens']:>10} {m['prompt_tps']:>12.1f} "
          f"{m['gen_tokens']:>7} {m['gen_tps']:>9.1f} {m['ttft_ms']:>8.1f}")
print()
for (name, side, w), m in summary.items():
    if side != "infermesh":
        continue
    p = summary.get((name, "llama.cpp", "as-stored"))
    if not p:
        continue
    n = min(len(m["tokens"]), len(p["tokens"]))
    same = next((i for i in range(n) if m["tokens"][i] != p["tokens"][i]), n)
    print(f"{name:24} {w:9} ratio: prompt {m['prompt_tps'] / p['prompt_tps']:.3f}, generation "
          f"{m['gen_tps'] / p['gen_tps']:.3f}, TTFT {p['ttft_ms'] / m['ttft_ms']:.3f}; "
          f"same first {same} of {len(m['tokens'])}/{len(p['tokens'])} generated tokens")
perf = [r["llama_perf"] for r in rows if r["side"] == "llama.cpp" and r.get("llama_perf")]
if perf:
    print("llama.cpp's own counters (median, decode only): prompt "
          f"{st.median(p['n_p_eval'] / p['t_p_eval_ms'] * 1e3 for p in perf if p['t_p_eval_ms']):.1f} tokens/s, "
          f"generation {st.median(p['n_eval'] / p['t_eval_ms'] * 1e3 for p in perf if p['t_eval_ms']):.1f} tokens/s")
print("load average per step:", sorted({r["load"] for r in rows}))
PY
