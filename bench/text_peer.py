#!/usr/bin/env python3
"""Peer for the MiniLM sentence-encoder benchmark: ONNX Runtime (Python, CPU) running the SAME
all-MiniLM-L6-v2 weights as infermesh-text (models/text, candle).

The ONNX graph is built here with onnx.helper straight from model.safetensors and config.json
(no torch, nothing fetched): BERT embeddings (word + position + token type 0, LayerNorm), the
encoder layers (self-attention with the additive mask (1 - mask) * -10000, exact erf GELU,
post-LayerNorm), mean pooling over the attention mask and L2 normalisation. Inputs input_ids
and attention_mask, int64 [batch, seq], dynamic axes; output sentence_embedding [batch, 384].
The node patterns are the ones a PyTorch export of Hugging Face BERT produces, so that
onnxruntime's transformer optimizer (optimize_model, model_type='bert') can fuse them.

Saved to $INFERMESH_CACHE/onnx/all-MiniLM-L6-v2.onnx (and .opt.onnx, the optimizer's output),
rebuilt only when missing.

Checks first that the embeddings of models/text/tests/fixtures/minilm_reference.json have
cosine >= 0.9999 with the reference (exits 1 otherwise), then measures, with tokenisation
(tokenizers, same tokenizer.json, truncation at 512, padding to the longest in the batch)
included in every timing:
  - throughput: a deterministic corpus of 1024 ~12-word sentences in batches of 32, 5 passes,
    median sentences/s;
  - single-sentence latency: 20 warm-up calls, then 300 calls (sentence i % 1024 of the
    corpus), p50 / p99 by nearest rank.
Prints one JSON object per graph (plain, optimized) on stdout; logs go to stderr.
`--graphs openvino-bf16` runs the plain graph on OpenVINO (Python) in bf16 instead: not the
issue's peer, but the check that infermesh's OpenVINO engine adds nothing to the engine's own
time (bench/text.sh prints that ratio apart).
bench/text.sh runs it and then models/text/examples/embed_bench.rs on the same corpus.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CACHE = os.environ.get("INFERMESH_CACHE", os.path.expanduser("~/.cache/infermesh"))
MODEL_CACHE = os.environ.get("INFERMESH_MODEL_CACHE", os.path.join(CACHE, "models"))
FIXTURE = os.path.join(ROOT, "models", "text", "tests", "fixtures", "minilm_reference.json")

CORPUS_SIZE = 1024
BATCH = 32
PASSES = 5
WARMUP = 20
SINGLE_CALLS = 300
MIN_COSINE = 0.9999
MASK_FILL = -10000.0  # (1 - mask) * MASK_FILL, added to the attention scores

# The benchmark corpus: sentences drawn from this list by a 64-bit xorshift seeded with SEED.
# The Rust side reads the file this script writes (--write-corpus), so both embed the same text.
SEED = 0x1F2E3D4C5B6A7988
WORDS = """the a customer paid with her card at the small coffee shop near station yesterday
morning refund was issued after delivery arrived late and package looked damaged engineer
wrote new service in rust to score payments faster than old python code our team ships
every week quality of support improved when account transfer salary moved bank online
weather cold so we bought warm jacket before hiking trip mountains friends cooked dinner
garden river city train ticket price rose again this year music concert tonight book
library student exam teacher school children played football park dog cat ran home
""".split()


def xorshift64(state):
    mask = (1 << 64) - 1
    state ^= (state << 13) & mask
    state ^= state >> 7
    state ^= (state << 17) & mask
    return state


def corpus(n=CORPUS_SIZE):
    """n sentences of 10 to 14 words (12 on average), first word capitalised, ending in '.'."""
    s = SEED
    out = []
    for _ in range(n):
        s = xorshift64(s)
        length = 10 + (s >> 33) % 5
        words = []
        for _ in range(length):
            s = xorshift64(s)
            words.append(WORDS[(s >> 33) % len(WORDS)])
        words[0] = words[0].capitalize()
        out.append(" ".join(words) + ".")
    return out


# ----------------------------------------------------------------------------------------------
# The graph.


def build_graph(model_dir, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    layers, eps = cfg["num_hidden_layers"], float(cfg["layer_norm_eps"])
    assert cfg.get("hidden_act", "gelu") == "gelu", cfg.get("hidden_act")
    assert cfg.get("position_embedding_type", "absolute") == "absolute"
    head_dim = hidden // heads
    raw = load_file(os.path.join(model_dir, "model.safetensors"))
    w = {(k[len("bert."):] if k.startswith("bert.") else k): v for k, v in raw.items()}

    inits, nodes = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(value, prefix="c", dtype=np.float32):
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), n))
        return n

    def weight(key, transpose=False):
        a = w[key].astype(np.float32)
        if transpose:
            a = np.ascontiguousarray(a.T)
        inits.append(numpy_helper.from_array(a, key))
        return key

    def node(op, inputs, prefix=None, **attrs):
        out = name(prefix or op.lower())
        nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", **attrs))
        return out

    def linear(x, key):  # x @ W^T + b, as torch exports it (MatMul, then Add of the bias)
        mm = node("MatMul", [x, weight(key + ".weight", transpose=True)])
        return node("Add", [weight(key + ".bias"), mm])

    def layer_norm(x, key):
        return node("LayerNormalization", [x, weight(key + ".weight"), weight(key + ".bias")],
                    axis=-1, epsilon=eps)

    # Embeddings: word + position (0..seq) + token type 0, then LayerNorm.
    shape = node("Shape", ["input_ids"])
    seq = node("Gather", [shape, const(1, dtype=np.int64)], axis=0)
    seq1 = node("Unsqueeze", [seq, const([0], dtype=np.int64)])
    pos_ids = node("Slice", [const(np.arange(cfg["max_position_embeddings"])[None, :], "position_ids",
                                   dtype=np.int64),
                             const([0], dtype=np.int64), seq1, const([1], dtype=np.int64)])
    token_types = node("ConstantOfShape", [shape],
                       value=helper.make_tensor("zero", TensorProto.INT64, [1], [0]))
    word = node("Gather", [weight("embeddings.word_embeddings.weight"), "input_ids"], axis=0)
    pos = node("Gather", [weight("embeddings.position_embeddings.weight"), pos_ids], axis=0)
    typ = node("Gather", [weight("embeddings.token_type_embeddings.weight"), token_types], axis=0)
    x = layer_norm(node("Add", [node("Add", [word, typ]), pos]), "embeddings.LayerNorm")

    # The additive attention mask, [batch, 1, 1, seq].
    m = node("Unsqueeze", ["attention_mask", const([1], dtype=np.int64)])
    m = node("Unsqueeze", [m, const([2], dtype=np.int64)])
    m = node("Cast", [m], to=TensorProto.FLOAT)
    m = node("Sub", [const(1.0), m])
    mask_add = node("Mul", [m, const(MASK_FILL)])

    split_shape = const([0, 0, heads, head_dim], "split_heads", dtype=np.int64)
    merge_shape = const([0, 0, hidden], "merge_heads", dtype=np.int64)
    scale = const(math.sqrt(head_dim))
    for i in range(layers):
        p = f"encoder.layer.{i}."
        q = node("Transpose", [node("Reshape", [linear(x, p + "attention.self.query"), split_shape])],
                 perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [linear(x, p + "attention.self.key"), split_shape])],
                 perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [linear(x, p + "attention.self.value"), split_shape])],
                 perm=[0, 2, 1, 3])
        scores = node("Add", [node("Div", [node("MatMul", [q, k]), scale]), mask_add])
        probs = node("Softmax", [scores], axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge_shape])
        attn = linear(ctx, p + "attention.output.dense")
        x = layer_norm(node("Add", [attn, x]), p + "attention.output.LayerNorm")
        h = linear(x, p + "intermediate.dense")
        # exact GELU: x * 0.5 * (1 + erf(x / sqrt(2)))
        g = node("Erf", [node("Div", [h, const(math.sqrt(2.0))])])
        g = node("Mul", [node("Mul", [h, node("Add", [g, const(1.0)])]), const(0.5)])
        out = linear(g, p + "output.dense")
        x = layer_norm(node("Add", [out, x]), p + "output.LayerNorm")

    # Mean pooling over the attention mask, then L2 normalisation.
    mf = node("Unsqueeze", [node("Cast", ["attention_mask"], to=TensorProto.FLOAT),
                            const([2], dtype=np.int64)])  # [batch, seq, 1]
    axis1 = const([1], dtype=np.int64)
    total = node("ReduceSum", [node("Mul", [x, mf]), axis1], keepdims=0)  # [batch, hidden]
    count = node("Max", [node("ReduceSum", [mf, axis1], keepdims=0), const(1e-9)])  # [batch, 1]
    pooled = node("Div", [total, count])
    norm = node("Sqrt", [node("ReduceSum", [node("Mul", [pooled, pooled]), axis1], keepdims=1)])
    norm = node("Max", [norm, const(1e-12)])
    nodes.append(helper.make_node("Div", [pooled, norm], ["sentence_embedding"], name="l2_normalise"))

    graph = helper.make_graph(
        nodes, "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="infermesh bench/text_peer.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, path)


def optimize_graph(plain, path, heads, hidden):
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level=0: the Python fusions only (opt_level >= 1 first runs an onnxruntime pass whose
    # code imports torch); the session applies ORT_ENABLE_ALL on top when it loads the graph.
    opt = optimize_model(plain, model_type="bert", num_heads=heads, hidden_size=hidden,
                         opt_level=0, use_gpu=False)
    stats = opt.get_fused_operator_statistics()
    print(f"transformer optimizer fusions: {json.dumps({k: v for k, v in stats.items() if v})}",
          file=sys.stderr)
    tmp = path + ".tmp"
    opt.save_model_to_file(tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Running and measuring.


class Encoder:
    def __init__(self, onnx_path, tokenizer_path, threads):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(tokenizer_path)
        self.tok.enable_truncation(max_length=512)
        self.tok.enable_padding()  # pad id 0 ([PAD]) to the longest text in the batch
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])

    def embed(self, texts):
        enc = self.tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return self.sess.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0]


class OpenVinoEncoder(Encoder):
    """The plain graph on OpenVINO's CPU plugin, bf16 products (needs a CPU with native bf16)."""

    def __init__(self, onnx_path, tokenizer_path, threads):
        import openvino as ov
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(tokenizer_path)
        self.tok.enable_truncation(max_length=512)
        self.tok.enable_padding()
        core = ov.Core()
        self.model = core.compile_model(core.read_model(onnx_path), "CPU", {
            "INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": str(threads),
            "PERFORMANCE_HINT": "LATENCY"})
        self.req = self.model.create_infer_request()

    def embed(self, texts):
        enc = self.tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        out = self.req.infer({"input_ids": ids, "attention_mask": mask})
        return out[self.model.output("sentence_embedding")]


def min_cosine(encoder):
    fx = json.load(open(FIXTURE))
    texts = [s["text"] for s in fx["sentences"]]
    want = np.array([s["embedding"] for s in fx["sentences"]], dtype=np.float64)

    def cos(a, b):
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    batch = encoder.embed(texts)  # one padded batch (includes the text past 512 tokens)
    ones = [encoder.embed([t])[0] for t in texts]  # and each text alone
    worst = 1.0
    for i, t in enumerate(texts):
        for got in (batch[i], ones[i]):
            c = cos(got.astype(np.float64), want[i])
            if c < MIN_COSINE:
                print(f"MISMATCH sentence {i} ({t[:40]!r}): cosine {c:.6f}", file=sys.stderr)
            worst = min(worst, c)
    return worst


def nearest_rank(sorted_values, p):
    return sorted_values[max(0, math.ceil(p * len(sorted_values)) - 1)]


def measure(encoder, sentences):
    for i in range(0, 2 * BATCH, BATCH):  # warm-up
        encoder.embed(sentences[i:i + BATCH])
    rates = []
    for _ in range(PASSES):
        t = time.perf_counter()
        for i in range(0, len(sentences), BATCH):
            encoder.embed(sentences[i:i + BATCH])
        rates.append(len(sentences) / (time.perf_counter() - t))
    for i in range(WARMUP):
        encoder.embed([sentences[i % len(sentences)]])
    lat = []
    for i in range(SINGLE_CALLS):
        s = [sentences[i % len(sentences)]]
        t = time.perf_counter()
        encoder.embed(s)
        lat.append((time.perf_counter() - t) * 1e3)
    lat.sort()
    return statistics.median(rates), nearest_rank(lat, 0.50), nearest_rank(lat, 0.99)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(MODEL_CACHE, "all-MiniLM-L6-v2"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--write-corpus", metavar="PATH", help="also write the corpus here, one a line")
    ap.add_argument("--graphs", default="plain,optimized",
                    help="comma list of plain,optimized,openvino-bf16")
    ap.add_argument("--check-only", action="store_true", help="only the correctness check")
    args = ap.parse_args()

    import onnxruntime as ort

    sentences = corpus()
    if args.write_corpus:
        os.makedirs(os.path.dirname(os.path.abspath(args.write_corpus)), exist_ok=True)
        with open(args.write_corpus, "w") as f:
            f.write("\n".join(sentences) + "\n")
        print(f"corpus: {len(sentences)} sentences -> {args.write_corpus}", file=sys.stderr)

    cfg = json.load(open(os.path.join(args.model, "config.json")))
    onnx_dir = os.path.join(CACHE, "onnx")
    plain = os.path.join(onnx_dir, "all-MiniLM-L6-v2.onnx")
    optimized = os.path.join(onnx_dir, "all-MiniLM-L6-v2.opt.onnx")
    if not os.path.isfile(plain):
        print(f"building {plain}", file=sys.stderr)
        build_graph(args.model, plain)
    graphs = [g.strip() for g in args.graphs.split(",") if g.strip()]
    if "optimized" in graphs and not os.path.isfile(optimized):
        print(f"optimizing -> {optimized}", file=sys.stderr)
        optimize_graph(plain, optimized, cfg["num_attention_heads"], cfg["hidden_size"])

    tokenizer = os.path.join(args.model, "tokenizer.json")
    failed = False
    for g in graphs:
        if g == "openvino-bf16":
            enc = OpenVinoEncoder(plain, tokenizer, args.threads)
        else:
            enc = Encoder({"plain": plain, "optimized": optimized}[g], tokenizer, args.threads)
        worst = min_cosine(enc)
        print(f"{g}: min cosine vs reference {worst:.9f}", file=sys.stderr)
        if worst < MIN_COSINE:
            failed = True
            continue
        if args.check_only:
            continue
        rate, p50, p99 = measure(enc, sentences)
        engine = "openvino-python" if g.startswith("openvino") else "onnxruntime-python"
        print(json.dumps({"engine": engine, "ort_version": ort.__version__,
                          "graph": g, "threads": args.threads,
                          "batch32_sentences_per_s_median": round(rate, 2),
                          "single_p50_ms": round(p50, 3), "single_p99_ms": round(p99, 3),
                          "min_cosine_vs_reference": round(worst, 9)}), flush=True)
    if failed:
        print(f"FAILED: cosine below {MIN_COSINE}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
