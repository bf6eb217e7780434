"""llama.cpp side of bench/llm.sh, through llama-cpp-python 0.3 (bench/requirements-llm-peer.txt).

`llm_peer.py MODEL.gguf TOKENS.json THREADS`: loads the GGUF with
`Llama(n_ctx=4096, n_batch=512, n_threads=THREADS, n_threads_batch=THREADS)` (infermesh's
num_ctx and num_batch defaults), warms up with one short untimed generation, then for each prompt
of TOKENS.json (written by `llm_bench tokenize`: the very token ids infermesh evaluates) runs the
same loop as infermesh's generation: evaluate the prompt (`Llama.eval`, in n_batch chunks), then
repeatedly take the argmax of the last position's logits (read from llama.cpp's buffer) (greedy, no repeat penalty) and evaluate that token,
until `num_predict` tokens or an end-of-generation id. The KV cache is cleared before each prompt
(`reset()`: no prefix reuse). Counts and clocks as infermesh's: prompt tokens / prompt evaluation
time; generated tokens (the end token included) / the time from the end of the prompt to the
last token; time to first token from the start of the prompt evaluation to the first sampled
token. The numpy argmax and Python loop add a few tens of µs per token; llama.cpp's own
counters (llama_perf_context: decode time only) are printed beside them. One JSON line per
prompt.
"""
import json
import sys
import time

import numpy as np
import llama_cpp
from llama_cpp import Llama


def generate(llm, ids, num_predict, end_ids):
    llm.reset()
    try:
        llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
    except Exception:  # noqa: BLE001 (older or newer bindings without the perf API)
        pass
    started = time.perf_counter()
    llm.eval(ids)
    prompt_done = time.perf_counter()
    tokens, first = [], None
    n_vocab = llm.n_vocab()
    while len(tokens) < num_predict and llm.n_tokens < llm.n_ctx():
        # The last evaluated position's logits (0.3.x keeps no copy in `scores` unless
        # logits_all).
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
        tok = int(np.argmax(logits))
        tokens.append(tok)
        if first is None:
            first = time.perf_counter()
        if tok in end_ids:
            break
        llm.eval([tok])
    done = time.perf_counter()
    perf = None
    try:
        p = llama_cpp.llama_perf_context(llm._ctx.ctx)
        perf = {"t_p_eval_ms": p.t_p_eval_ms, "n_p_eval": p.n_p_eval,
                "t_eval_ms": p.t_eval_ms, "n_eval": p.n_eval}
    except Exception:  # noqa: BLE001
        pass
    return {
        "prompt_tokens": len(ids),
        "prompt_seconds": prompt_done - started,
        "gen_tokens": len(tokens),
        "gen_seconds": done - prompt_done,
        "ttft_seconds": (first or done) - started,
        "tokens": tokens,
        "llama_perf": perf,
    }


def main(model, tokens_path, threads):
    spec = json.load(open(tokens_path))
    end_ids = set(spec["end_of_generation_ids"])
    threads = int(threads)
    llm = Llama(model_path=model, n_ctx=4096, n_batch=512, n_threads=threads,
                n_threads_batch=threads, verbose=False)
    warm = llm.tokenize(b"Hello", add_bos=False)
    generate(llm, warm, 4, end_ids)
    for p in spec["prompts"]:
        r = generate(llm, p["prompt_ids"], int(p["num_predict"]), end_ids)
        print(json.dumps({"side": "llama.cpp", "weights": "as-stored", "name": p["name"],
                          "llama_cpp_python": llama_cpp.__version__, **r}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
