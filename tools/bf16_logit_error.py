#!/usr/bin/env python3
"""How far bf16 arithmetic moves the logits of the tiny random BERT classifier that
`models/text/tests/classifier.rs` writes; it sets that test's bf16 tolerance.

The model is the test's (hidden 16, 2 layers, 2 heads, intermediate 32, 3 labels, GELU) with
weights drawn as candle's VarMap draws them: embeddings N(0, 1), linear weights Kaiming-normal
(std sqrt(2 / fan_in)), linear biases U(+-1/sqrt(fan_in)), LayerNorm weight 1 and bias 0. The
bf16 run rounds every matrix-product input and every operation's output to bf16 (round to
nearest even), which is harsher than OpenVINO's bf16 mode (f32 accumulation, LayerNorm and
softmax in f32); the reference runs in float64. Prints percentiles, over random models, of the
largest absolute logit error and of that error relative to the largest |logit|.

    ~/.cache/infermesh/venv-mlflow/bin/python tools/bf16_logit_error.py [models]

(any Python with NumPy). 2026-11-24, 300 models: absolute error median 0.017, max 0.072 (39 %
of models above 0.02); relative to the largest |logit| median 0.011, p99 0.035, max 0.038.
"""
import math
import sys

import numpy as np

HIDDEN, HEADS, INTER, LAYERS, VOCAB, POSITIONS = 16, 2, 32, 2, 18, 32
# The test's four texts as token ids ([CLS] ... [SEP]).
TEXTS = [[2, 4, 5, 3], [2, 6, 7, 13, 14, 9, 3], [2, 8, 3], [2, 10, 11, 16, 17, 12, 14, 3]]


def bf16(x):
    """Round float32 values to bf16 (nearest even), returned as float64."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def exact(x):
    return x


def layer_norm(x, q):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return q((x - mean) / np.sqrt(var + 1e-12))


def gelu(x):
    return x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def forward(w, ids, q):
    def linear(a, name):
        return q(q(a) @ q(w[name]).T + w[name + ".b"])

    d = HIDDEN // HEADS
    x = layer_norm(w["word"][ids] + w["position"][: len(ids)] + w["type"][0], q)
    for layer in range(LAYERS):
        p = f"{layer}."
        qs, ks, vs = (linear(x, p + n) for n in ("q", "k", "v"))
        heads = []
        for h in range(HEADS):
            cols = slice(h * d, (h + 1) * d)
            scores = q(q(qs[:, cols]) @ q(ks[:, cols]).T / math.sqrt(d))
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs = q(probs / probs.sum(-1, keepdims=True))
            heads.append(q(probs @ q(vs[:, cols])))
        x = layer_norm(linear(np.concatenate(heads, -1), p + "o") + x, q)
        x = layer_norm(linear(q(gelu(linear(x, p + "i"))), p + "f") + x, q)
    pooled = q(np.tanh(linear(x[0], "pooler")))
    return linear(pooled, "classifier")


def random_model(rng):
    w = {
        "word": rng.normal(0, 1, (VOCAB, HIDDEN)),
        "position": rng.normal(0, 1, (POSITIONS, HIDDEN)),
        "type": rng.normal(0, 1, (2, HIDDEN)),
    }

    def add_linear(name, out_dim, in_dim):
        w[name] = rng.normal(0, math.sqrt(2 / in_dim), (out_dim, in_dim))
        w[name + ".b"] = rng.uniform(-1 / math.sqrt(in_dim), 1 / math.sqrt(in_dim), out_dim)

    for layer in range(LAYERS):
        for name in ("q", "k", "v", "o"):
            add_linear(f"{layer}.{name}", HIDDEN, HIDDEN)
        add_linear(f"{layer}.i", INTER, HIDDEN)
        add_linear(f"{layer}.f", HIDDEN, INTER)
    add_linear("pooler", HIDDEN, HIDDEN)
    add_linear("classifier", 3, HIDDEN)
    return w


def main():
    models = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    rng = np.random.default_rng(0)
    errors, scales = [], []
    for _ in range(models):
        w = random_model(rng)
        pairs = [(forward(w, np.array(t), exact), forward(w, np.array(t), bf16)) for t in TEXTS]
        errors.append(max(np.abs(ref - got).max() for ref, got in pairs))
        scales.append(max(np.abs(ref).max() for ref, _ in pairs))
    errors, scales = np.array(errors), np.array(scales)
    pct = [50, 90, 99, 100]
    print(f"{models} models; percentiles {pct}")
    print("largest absolute logit error:", np.round(np.percentile(errors, pct), 4))
    print("relative to the largest |logit|:", np.round(np.percentile(errors / scales, pct), 4))
    print(f"share of models above 0.02 absolute: {(errors > 0.02).mean():.2f}")


if __name__ == "__main__":
    main()
