"""The unmodified OpenAI Python client (pip) against `infermesh serve`'s OpenAI-compatible
`POST /v1/embeddings` (the route TEI also serves), on conftest.py's server: `minilm`
embeddings checked against the NumPy reference in models/text/tests/fixtures, token usage,
both encodings (the client asks for base64 by default and decodes it itself; asked for
explicitly, base64 comes back as the string), and errors raised as the client's own exception
types with the server's message.
"""
import base64
import json
from pathlib import Path

import numpy as np
import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
TEXT_REFERENCE = json.loads(
    (ROOT / "models" / "text" / "tests" / "fixtures" / "minilm_reference.json").read_text())


def client(server):
    return openai.OpenAI(base_url=f"http://{server['http']}/v1", api_key="unused",
                         max_retries=0)


def cosines(got, want):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return (got * want).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)


def test_embeddings_match_the_reference_in_both_encodings(server):
    ref = [s for s in TEXT_REFERENCE["sentences"] if s["text"]][:5]
    texts = [s["text"] for s in ref]
    want = [s["embedding"] for s in ref]
    c = client(server)
    answers = {}
    for fmt in ("default", "float", "base64"):
        kwargs = {} if fmt == "default" else {"encoding_format": fmt}
        r = c.embeddings.create(model="minilm", input=texts, **kwargs)
        assert r.model == "minilm"
        assert [d.index for d in r.data] == list(range(len(ref)))
        if fmt == "base64":
            got = [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in r.data]
        else:
            got = [d.embedding for d in r.data]
        answers[fmt] = np.asarray(got, dtype=np.float32)
        assert cosines(got, want).min() >= 0.9999, fmt
        assert r.usage.prompt_tokens == sum(s["tokens"] for s in ref)
        assert r.usage.total_tokens == r.usage.prompt_tokens
    # Same vectors whichever way they travel.
    assert np.array_equal(answers["default"], answers["float"])
    assert np.array_equal(answers["base64"], answers["float"])
    one = c.embeddings.create(model="minilm", input=texts[0])
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384


def test_errors_are_the_clients_exceptions(server):
    c = client(server)
    with pytest.raises(openai.NotFoundError):
        c.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        c.embeddings.create(model="minilm", input="x", dimensions=64)
    with pytest.raises(openai.BadRequestError, match="tabular|text"):
        c.embeddings.create(model="fraud", input="x")
