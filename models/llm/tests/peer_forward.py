"""An independent llama forward pass in NumPy over the dequantized weights of a GGUF file (gguf's
dequantize), greedy-decoding SmolLM2's chat prompt for "What is the capital of France?". Its
ids are the reference in tests/generation.rs (f32_weights_equal_a_numpy_reference_forward_pass):

    ~/.cache/infermesh/venv-llm-peer/bin/python models/llm/tests/peer_forward.py \
        ~/.cache/infermesh/models/smollm2-135m-instruct/model.gguf 12

Output measured: [504, 3575, 282, 4649, 314, 7042, 30, 2, ...] 'The capital of France is Paris.<|im_end|>...'
"""
import sys, numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import Tokenizer, AddedToken, decoders, models, pre_tokenizers
r = GGUFReader(sys.argv[1])
meta = {k: f.contents() for k, f in r.fields.items() if k.startswith("tokenizer.ggml")}
bpe = models.BPE(vocab={t: i for i, t in enumerate(meta["tokenizer.ggml.tokens"])},
                 merges=[tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]])
tok = Tokenizer(bpe)
tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
tok.decoder = decoders.ByteLevel()
tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]) if ty == 3])
W = {}
for t in r.tensors:
    a = dequantize(t.data, t.tensor_type).astype(np.float32)
    W[t.name] = a.reshape([int(x) for x in reversed(t.shape)]) if a.ndim > 1 or len(t.shape) > 1 else a.reshape(-1)
print(sorted(k for k in W if not k.startswith("blk."))[:10], W["token_embd.weight"].shape)
L, H, KV, D, eps, base = 30, 9, 3, 64, 1e-5, 100000.0
def rms(x, w): return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
def rope(x, pos):  # x: (T, h, D) interleaved pairs
    inv = base ** (-np.arange(0, D, 2) / D)
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x); out[..., 0::2] = x0 * c - x1 * s; out[..., 1::2] = x0 * s + x1 * c
    return out
def forward(ids):
    T = len(ids); x = W["token_embd.weight"][ids]; pos = np.arange(T, dtype=np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(L):
        p = f"blk.{l}."
        h = rms(x, W[p + "attn_norm.weight"])
        q = (h @ W[p + "attn_q.weight"].T).reshape(T, H, D); k = (h @ W[p + "attn_k.weight"].T).reshape(T, KV, D)
        v = (h @ W[p + "attn_v.weight"].T).reshape(T, KV, D)
        q, k = rope(q, pos), rope(k, pos)
        k = np.repeat(k, H // KV, axis=1); v = np.repeat(v, H // KV, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(D) + mask
        att = np.exp(att - att.max(-1, keepdims=True)); att /= att.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, H * D)
        x = x + o @ W[p + "attn_output.weight"].T
        h = rms(x, W[p + "ffn_norm.weight"])
        g = h @ W[p + "ffn_gate.weight"].T; u = h @ W[p + "ffn_up.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ W[p + "ffn_down.weight"].T
    x = rms(x, W["output_norm.weight"])
    out = W.get("output.weight", W["token_embd.weight"])
    return x[-1] @ out.T
prompt = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
ids = tok.encode(prompt).ids
gen = []
for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 12):
    logits = forward(ids + gen)
    gen.append(int(np.argmax(logits)))
print("greedy ids", gen)
print("text", repr(tok.decode(gen, skip_special_tokens=False)))
