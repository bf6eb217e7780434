"""The unmodified tritonclient (pip, http and grpc) against a real `infermesh serve`.

The server is conftest.py's shared `server` fixture: the sample fraud model (config.toml), the
same model as a Triton FIL directory, and all-MiniLM-L6-v2. The tests that change what is
served (unload/load, a new version) run on a server of their own (`own_server`), so the tests
pass in any order. Expected values come from xgboost itself
(deploy/sample-repository/fraud/example.json, written by tools/gen_sample_fraud_model.py);
`minilm` (bert-embedding, BYTES in) is checked against the NumPy reference in
models/text/tests/fixtures.
"""
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "sample-repository" / "fraud"
EXAMPLE = json.loads((SAMPLE / "example.json").read_text())
FEATURES = list(EXAMPLE["features"].keys())

TEXT_REFERENCE = json.loads(
    (ROOT / "models" / "text" / "tests" / "fixtures" / "minilm_reference.json").read_text())


def example_row():
    return np.array([[np.nan if EXAMPLE["features"][f] is None else EXAMPLE["features"][f]
                      for f in FEATURES]], dtype=np.float32)


def test_http_health_metadata_and_infer(server):
    c = httpclient.InferenceServerClient(url=server["http"])
    assert c.is_server_live() and c.is_server_ready()
    assert c.get_server_metadata()["name"] == "infermesh"
    assert c.is_model_ready("fraud")
    meta = c.get_model_metadata("fraud")
    assert meta["inputs"][0]["shape"] == [-1, 16]
    x = example_row()
    for binary in (True, False):
        inp = httpclient.InferInput("input__0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("output__0", binary_data=binary)
        res = c.infer("fraud", [inp], outputs=[out], request_id="r1")
        got = res.as_numpy("output__0")
        assert got.shape == (1,)
        assert abs(float(got[0]) - EXAMPLE["probability"]) < 1e-5
    # No outputs named: tritonclient asks for binary output of everything.
    inp = httpclient.InferInput("input__0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    assert abs(float(c.infer("fraud", [inp]).as_numpy("output__0")[0]) - EXAMPLE["probability"]) < 1e-5


def test_http_fil_model_and_batch(server):
    c = httpclient.InferenceServerClient(url=server["http"])
    x = np.repeat(example_row(), 64, axis=0)
    inp = httpclient.InferInput("input__0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got = c.infer("fil_fraud", [inp]).as_numpy("output__0")
    assert got.shape == (64, 2)
    assert np.allclose(got[:, 1], EXAMPLE["probability"], atol=1e-5)
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-6)
    assert c.get_model_config("fil_fraud")["max_batch_size"] == 8192


def test_grpc_health_metadata_and_infer(server):
    c = grpcclient.InferenceServerClient(url=server["grpc"])
    assert c.is_server_live() and c.is_server_ready()
    assert c.get_server_metadata().name == "infermesh"
    assert c.is_model_ready("fraud", "1")
    meta = c.get_model_metadata("fraud")
    assert list(meta.inputs[0].shape) == [-1, 16]
    cfg = c.get_model_config("fil_fraud").config
    assert cfg.max_batch_size == 8192
    assert list(cfg.input[0].dims) == [16] and cfg.input[0].name == "input__0"
    assert list(cfg.output[0].dims) == [2]
    assert cfg.parameters["model_type"].string_value == "xgboost_json"
    x = np.repeat(example_row(), 3, axis=0)
    for dtype, arr in (("FP32", x), ("FP64", x.astype(np.float64))):
        inp = grpcclient.InferInput("input__0", list(arr.shape), dtype)
        inp.set_data_from_numpy(arr)
        res = c.infer("fraud", [inp], outputs=[grpcclient.InferRequestedOutput("output__0")])
        got = res.as_numpy("output__0")
        assert got.shape == (3,)
        assert np.allclose(got, EXAMPLE["probability"], atol=1e-5)
        assert res.get_response().model_version == "1"


def test_errors_surface_as_exceptions(server):
    h = httpclient.InferenceServerClient(url=server["http"])
    g = grpcclient.InferenceServerClient(url=server["grpc"])
    bad = np.zeros((1, 15), dtype=np.float32)
    hi = httpclient.InferInput("input__0", [1, 15], "FP32")
    hi.set_data_from_numpy(bad)
    with pytest.raises(InferenceServerException, match="expects 16"):
        h.infer("fraud", [hi])
    gi = grpcclient.InferInput("input__0", [1, 15], "FP32")
    gi.set_data_from_numpy(bad)
    with pytest.raises(InferenceServerException) as e:
        g.infer("fraud", [gi])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as e:
        g.get_model_metadata("ghost")
    assert e.value.status() == "StatusCode.NOT_FOUND"
    assert not h.is_model_ready("ghost")


def test_repository_extension_http_and_grpc(own_server):
    # Unloads and loads: on a server of its own, so no other test sees fil_fraud missing.
    h = httpclient.InferenceServerClient(url=own_server["http"])
    g = grpcclient.InferenceServerClient(url=own_server["grpc"])
    names = {m["name"] for m in h.get_model_repository_index()}
    assert {"fraud", "fil_fraud"} <= names
    idx = g.get_model_repository_index()
    assert any(m.name == "fil_fraud" and m.state == "READY" for m in idx.models)
    h.unload_model("fil_fraud")
    assert not h.is_model_ready("fil_fraud")
    g.load_model("fil_fraud")
    assert g.is_model_ready("fil_fraud")
    g.unload_model("fil_fraud")
    assert not g.is_model_ready("fil_fraud")
    h.load_model("fil_fraud")
    assert h.is_model_ready("fil_fraud")


def test_hot_reload_new_version(own_server):
    # Moves fraud to version 2: on a server (and repository copy) of its own, so the shared
    # server keeps serving version 1 to the other tests, whatever their order.
    h = httpclient.InferenceServerClient(url=own_server["http"])
    repo = own_server["repo"]
    assert h.get_model_metadata("fraud")["versions"] == ["1"]
    tmp = repo / "fraud" / ".incoming"
    tmp.mkdir()
    shutil.copy(repo / "fraud" / "1" / "model.json", tmp / "model.json")
    tmp.rename(repo / "fraud" / "2")
    # Waits for the reload itself (polled every 0.2 s); the bound only ends a test that would
    # otherwise never finish.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and h.get_model_metadata("fraud")["versions"] != ["2"]:
        time.sleep(0.05)
    assert h.get_model_metadata("fraud")["versions"] == ["2"]
    x = example_row()
    inp = httpclient.InferInput("input__0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = h.infer("fraud", [inp])
    assert res.get_response()["model_version"] == "2"


def test_text_embeddings_over_http_and_grpc(server):
    ref = [s for s in TEXT_REFERENCE["sentences"] if s["text"]][:4]
    texts = np.array([[s["text"].encode()] for s in ref], dtype=np.object_)
    want = np.array([s["embedding"] for s in ref], dtype=np.float32)
    h = httpclient.InferenceServerClient(url=server["http"])
    meta = h.get_model_metadata("minilm")
    assert meta["inputs"][0]["datatype"] == "BYTES"
    assert meta["outputs"][0]["shape"] == [-1, 384]
    for binary in (True, False):
        inp = httpclient.InferInput("text", list(texts.shape), "BYTES")
        inp.set_data_from_numpy(texts, binary_data=binary)
        got = h.infer("minilm", [inp]).as_numpy("embedding")
        assert got.shape == (len(ref), 384)
        cos = (got * want).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert cos.min() >= 0.9999, cos
    g = grpcclient.InferenceServerClient(url=server["grpc"])
    inp = grpcclient.InferInput("text", list(texts.shape), "BYTES")
    inp.set_data_from_numpy(texts)
    got = g.infer("minilm", [inp]).as_numpy("embedding")
    cos = (got * want).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.9999, cos
    # Request parameters reach the text model: with truncation off, a text past 512 tokens
    # is refused with its length, over both protocols.
    long = np.array([[("word " * 600).encode()]], dtype=np.object_)
    for client, mod in ((h, httpclient), (g, grpcclient)):
        inp = mod.InferInput("text", [1, 1], "BYTES")
        inp.set_data_from_numpy(long)
        with pytest.raises(InferenceServerException, match="602 tokens"):
            client.infer("minilm", [inp], parameters={"truncate": False})
        assert client.infer("minilm", [inp]).as_numpy("embedding").shape == (1, 384)
    # Numbers where texts are expected: a clear error, not a crash.
    bad = httpclient.InferInput("text", [1, 1], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="BYTES"):
        h.infer("minilm", [bad])
