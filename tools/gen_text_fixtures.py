#!/usr/bin/env python3
"""Reference sentence embeddings for all-MiniLM-L6-v2, computed by an independent NumPy
implementation of the BERT forward pass (no candle, no torch) reading the same safetensors and
tokenizer.json, with sentence-transformers' pooling (masked mean, then L2 normalisation).
Writes models/text/tests/fixtures/minilm_reference.json. Regenerate with:

    scripts/fetch_models.sh is sourced by scripts/test.sh; or run it once, then
    ~/.cache/infermesh/venv-fixtures/bin/pip install -r tools/requirements-fixtures.txt
    ~/.cache/infermesh/venv-fixtures/bin/python tools/gen_text_fixtures.py [MODEL_DIR]
"""
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/infermesh/models/all-MiniLM-L6-v2")
OUT = os.path.join(os.path.dirname(__file__), "..", "models", "text", "tests", "fixtures", "minilm_reference.json")

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "Senior backend engineer: Rust, Kafka, PostgreSQL, 5+ years building payment systems.",
    "Data scientist with Python, scikit-learn and A/B testing experience; CI/CD and Node.js a plus.",
    "Card payment at COFFEE SHOP 1234 LONDON GB for 3.40 GBP",
    "UBER *TRIP HELP.UBER.COM",
    "Monthly rent transfer to landlord",
    "This blender is loud but crushes ice perfectly, five stars.",
    "Terrible customer service, the package arrived broken and nobody answered.",
    "Recommended for you: waterproof hiking jacket, size M",
    "C++ and CUDA kernels for real-time inference on GPUs",
    "",
    "Ünïcödé façade — naïve café résumé, 東京 and emojis 🚀✨ included!",
    "word " * 600,
]


def layer_norm(x, g, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def forward(w, cfg, ids):
    n = len(ids)
    h = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    d = h // heads
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"]).astype(np.float64)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda t, name: t @ w[p + name + ".weight"].T.astype(np.float64) + w[p + name + ".bias"]
        q = lin(x, "attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, h)
        x = layer_norm(lin(ctx, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"])
        inter = gelu(lin(x, "intermediate.dense"))
        x = layer_norm(lin(inter, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def main():
    cfg = json.load(open(os.path.join(MODEL, "config.json")))
    w = load_file(os.path.join(MODEL, "model.safetensors"))
    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=cfg["max_position_embeddings"])
    out = []
    for s in SENTENCES:
        ids = tok.encode(s).ids
        out.append({"text": s, "tokens": len(ids), "embedding": [float(v) for v in forward(w, cfg, ids)]})
    e = {o["text"]: np.array(o["embedding"]) for o in out}
    pairs = {"eating_bread": float(e[SENTENCES[0]] @ e[SENTENCES[1]]), "eating_baby": float(e[SENTENCES[0]] @ e[SENTENCES[2]])}
    print(pairs)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump({"model": "all-MiniLM-L6-v2", "max_length": cfg["max_position_embeddings"], "pairs": pairs,
                   "sentences": out}, fh)


if __name__ == "__main__":
    main()
