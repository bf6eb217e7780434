"""The `infermesh serve` the client tests share (one per test session).

The server binary comes from INFERMESH_BIN; it serves a temporary repository holding the
sample fraud model (config.toml), the same model as a Triton FIL directory, and
all-MiniLM-L6-v2 from the model cache as `minilm` (bert-embedding).
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "sample-repository" / "fraud"

FIL_CONFIG = """
name: "fil_fraud"
backend: "fil"
max_batch_size: 8192
input [{ name: "input__0" data_type: TYPE_FP32 dims: [ 16 ] }]
output [{ name: "output__0" data_type: TYPE_FP32 dims: [ 2 ] }]
instance_group [{ kind: KIND_CPU }]
parameters [
  { key: "model_type" value: { string_value: "xgboost_json" } },
  { key: "output_class" value: { string_value: "true" } },
  { key: "predict_proba" value: { string_value: "true" } }
]
"""

MODEL_CACHE = Path(os.environ.get("INFERMESH_MODEL_CACHE",
                                  Path.home() / ".cache" / "infermesh" / "models"))
MINILM = MODEL_CACHE / "all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(SAMPLE, repo / "fraud")
    (repo / "fil_fraud" / "1").mkdir(parents=True)
    shutil.copy(SAMPLE / "1" / "model.json", repo / "fil_fraud" / "1" / "xgboost.json")
    (repo / "fil_fraud" / "config.pbtxt").write_text(FIL_CONFIG)
    (repo / "minilm" / "1").mkdir(parents=True)
    for f in ("config.json", "model.safetensors", "tokenizer.json", "1_Pooling"):
        (repo / "minilm" / "1" / f).symlink_to(MINILM / f)
    (repo / "minilm" / "config.toml").write_text('platform = "bert-embedding"\n')
    binary = os.environ.get("INFERMESH_BIN", str(ROOT / "target" / "debug" / "infermesh"))
    proc = subprocess.Popen(
        [binary, "serve", "--model-repository", str(repo), "--host", "127.0.0.1",
         "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", "--poll-interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http (\S+) grpc (\S+) metrics (\S+)", line)
        assert m, f"unexpected first line: {line!r}"
        yield {"http": m.group(1), "grpc": m.group(2), "metrics": m.group(3), "repo": repo}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
