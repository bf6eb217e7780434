"""Writes the tokenizer reference fixture (tests/fixtures/tokenizer_peer.json): token ids that
the Hugging Face `tokenizers` Python package gives for a few hundred varied strings, with a
second opinion from `transformers`' GGUF tokenizer converter (see below).

    python3 -m venv ~/.cache/infermesh/venv-llm-peer
    ~/.cache/infermesh/venv-llm-peer/bin/pip install transformers gguf
    ~/.cache/infermesh/venv-llm-peer/bin/python models/llm/tests/peer_tokenizer.py \
        ~/.cache/infermesh/models/smollm2-135m-instruct/model.gguf
"""
import json
import os
import random
import sys

import transformers
from gguf import GGUFReader
from tokenizers import Tokenizer, AddedToken, decoders, models, pre_tokenizers

gguf = sys.argv[1]
reader = GGUFReader(gguf)
meta = {k: f.contents() for k, f in reader.fields.items() if k.startswith(("tokenizer.ggml", "general.arch"))}

# Reference 1 (the fixture): the Hugging Face `tokenizers` package on the same GGUF vocab and
# merges, split as llama.cpp splits pre-type "smollm" (every \p{N} alone, then GPT-2's regex),
# which is also SmolLM2's own tokenizer.json (Digits(individual_digits) + ByteLevel).
bpe = models.BPE(vocab={t: i for i, t in enumerate(meta["tokenizer.ggml.tokens"])},
                 merges=[tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]])
ref = Tokenizer(bpe)
ref.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
ref.decoder = decoders.ByteLevel()
ref.add_special_tokens([AddedToken(t, special=True, normalized=False)
                        for t, ty in zip(meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]) if ty == 3])

# Reference 2 (reported, not the fixture): transformers' own GGUF tokenizer converter, fed the
# same metadata (its reader module imports torch, which is not installed, so the metadata comes
# from the gguf package). It has no entry for pre-type "smollm" and so splits with plain GPT-2's
# regex: multi-digit numbers come out as one piece where llama.cpp splits every digit.
from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer
tdict = {name: meta[f"tokenizer.{key}"] for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items()
         if f"tokenizer.{key}" in meta}
hf, _ = convert_gguf_tokenizer(meta["general.architecture"], tdict)

fixed = [
    "", " ", "  ", "\n", "\n\n\n", "\t", " \t \n ", "Hello world", "Hello, world!", " Hello",
    "hello   world", "trailing spaces   ", "   leading", "It's we're they've I'm you'll he'd",
    "IT'S WE'RE", "12345", "3.14159", "1,000,000", "year 2024 and 1999", "x1y22z333",
    "١٢٣ ٤٥٦", "Ⅻ Ⅳ ½ ²", "café naïve résumé", "Grüße aus Köln", "Привет, мир!", "こんにちは世界",
    "你好，世界。", "안녕하세요", "مرحبا بالعالم", "שלום", "🙂😀🚀 emoji 👩‍👩‍👧", "a\u00a0b", "zero\u200bwidth",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "<|im_start|><|im_end|>",
    "text<|im_end|>more", "<|endoftext|>", "<|im_start", "im_end|>", "<repo_name>x<file_sep>",
    "def f(x):\n    return x**2  # square\n", "for (int i = 0; i < n; ++i) { a[i] += 1; }",
    "https://example.com/path?q=1&r=two#frag", "user@example.com", "C:\\Users\\me\\file.txt",
    "$$\\frac{a}{b}$$", "--- *** ___ ``` ~~~", "\"quoted\" 'single' `tick`", "...!!!???",
    "mixed123abc456", "ALLCAPS lowercase MiXeD", "don't won't can't", "a  b   c    d",
    "line1\r\nline2\rline3", "tab\tseparated\tvalues", "   \n   \n", "ＡＢＣ１２３",
]

rng = random.Random(20241205)
pieces = [
    "the", "cat", "sat", "on", "mat", " ", "  ", "\n", "\t", "42", "7", "2024", "3.5", "é", "ß",
    "中文", "日本語", "😀", "🚀", "Привет", "'s", "'re", "'ll", "!", "?", ",", ".", "...", "-", "_",
    "<|im_start|>", "<|im_end|>", "user", "assistant", "system", "\n\n", "    ", "(", ")", "{", "}",
    "=", "==", "=>", "::", "http", "://", "www", "Hello", "WORLD", "naïve", "١٢", "½", "™", "©",
    "\u00a0", "a", "I", "x", "0", "99", "000", "tokenizer", "GGUF", "SmolLM", "#", "@", "%", "&",
]
generated = []
for _ in range(340):
    n = rng.randint(1, 14)
    generated.append("".join(rng.choice(pieces) for _ in range(n)))

cases = []
differ = []
for text in fixed + generated:
    ids = ref.encode(text, add_special_tokens=False).ids
    other = hf.encode(text, add_special_tokens=False).ids
    if ids != other:
        differ.append(text)
    assert ref.decode(ids, skip_special_tokens=False) == text, text
    cases.append({"text": text, "ids": ids})
print(f"transformers {transformers.__version__} GGUF converter differs on {len(differ)} of {len(cases)}:"
      f" {[t for t in differ[:8]]}")
digitless = [t for t in differ if not any(c.isnumeric() for c in t)]
print(f"  of those without a numeric character: {len(digitless)} {digitless[:8]}")

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "tokenizer_peer.json")
with open(out, "w", encoding="utf-8") as f:
    json.dump({"peer": "tokenizers (Python) BPE from the GGUF vocab/merges, Digits(individual) + ByteLevel",
               "cases": cases}, f, ensure_ascii=False, indent=0)
print(f"{len(cases)} cases written to {out}")
