"""The official `ollama` Python client, unmodified, against `infermesh llm serve`."""
import json

import ollama
import pytest

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 24, "seed": 7}


@pytest.fixture()
def client(llm_url):
    return ollama.Client(host=llm_url)


def test_list_and_show(client):
    names = [m.model for m in client.list().models]
    assert names == [MODEL, "all-minilm"]
    first = client.list().models[0]
    assert first.digest.startswith("sha256:") and first.size > 1_000_000
    assert first.details.family == "llama" and first.details.parameter_size == "135M"
    shown = client.show(MODEL)
    assert "completion" in shown.capabilities
    assert shown.modelinfo["general.architecture"] == "llama"
    assert "im_start" in shown.template
    assert [m.model for m in client.ps().models] == [MODEL, "all-minilm"]


def test_generate_whole_and_streamed_agree(client):
    whole = client.generate(model=MODEL, prompt="Name three fruits.", options=GREEDY)
    assert whole.done and whole.response
    assert 0 < whole.eval_count <= GREEDY["num_predict"]
    assert whole.prompt_eval_count > 5 and whole.eval_duration > 0
    assert whole.context and len(whole.context) == whole.prompt_eval_count + whole.eval_count
    chunks = list(client.generate(model=MODEL, prompt="Name three fruits.", options=GREEDY,
                                  stream=True))
    assert chunks[-1].done and chunks[-1].done_reason in ("stop", "length")
    assert all(not c.done for c in chunks[:-1])
    assert "".join(c.response for c in chunks) == whole.response


def test_chat_whole_and_streamed(client):
    messages = [{"role": "system", "content": "You answer briefly."},
                {"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat(model=MODEL, messages=messages, options=GREEDY)
    assert whole.message.role == "assistant" and whole.message.content
    parts = list(client.chat(model=MODEL, messages=messages, options=GREEDY, stream=True))
    assert parts[-1].done
    assert "".join(p.message.content for p in parts) == whole.message.content


def test_structured_outputs(client):
    schema = {"type": "object",
              "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]},
                             "score": {"type": "number"}},
              "required": ["sentiment", "score"]}
    messages = [{"role": "user", "content":
                 "Classify this review as JSON: 'Great value, arrived early, works perfectly.'"}]
    out = client.chat(model=MODEL, messages=messages, format=schema,
                      options={"temperature": 0, "num_predict": 64})
    value = json.loads(out.message.content)
    assert value["sentiment"] in ("positive", "negative", "neutral")
    assert isinstance(value["score"], (int, float))
    out = client.generate(model=MODEL, prompt="Describe a cat as JSON.", format="json",
                          options={"temperature": 0, "num_predict": 256})
    assert isinstance(json.loads(out.response), dict)


def test_embed(client):
    out = client.embed(model="all-minilm", input=["a red dress", "a crimson gown", "tax law"])
    a, b, c = out.embeddings
    dot = lambda x, y: sum(p * q for p, q in zip(x, y))
    assert len(a) == 384 and abs(dot(a, a) - 1) < 1e-4
    # Sentence embeddings: the paraphrase is nearer than the unrelated text.
    assert dot(a, b) > dot(a, c) + 0.2
    assert len(client.embeddings(model="all-minilm", prompt="hello").embedding) == 384


def test_errors_are_response_errors_with_status(client):
    with pytest.raises(ollama.ResponseError) as e:
        client.generate(model="no-such-model", prompt="hi")
    assert e.value.status_code == 404 and "not found" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                    options={"temperature": "hot"})
    assert e.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as e:
        client.embed(model=MODEL, input="hi")
    assert e.value.status_code == 400
