"""The `infermesh serve` processes the client tests talk to.

The server binary comes from INFERMESH_BIN. `server` (one per test session, shared, never
changed by a test) serves a temporary repository holding the sample fraud model (config.toml),
the same model as a Triton FIL directory, and all-MiniLM-L6-v2 from the model cache as `minilm`
(bert-embedding). A test that changes what a server serves (loads, unloads, new versions) starts
its own with `own_server`, on a copy of the repository in its own temporary directory, so the
tests pass in any order or alone.
"""
import contextlib
import os
import re
import shutil
import subprocess
import threading
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

# How long a server may take to print the ports it bound (loading its models first).
START_TIMEOUT_S = 300


def write_repository(repo, minilm=True):
    """The sample fraud model and its Triton FIL twin (and `minilm` unless told not to)."""
    repo.mkdir(parents=True, exist_ok=True)
    shutil.copytree(SAMPLE, repo / "fraud")
    (repo / "fil_fraud" / "1").mkdir(parents=True)
    shutil.copy(SAMPLE / "1" / "model.json", repo / "fil_fraud" / "1" / "xgboost.json")
    (repo / "fil_fraud" / "config.pbtxt").write_text(FIL_CONFIG)
    if minilm:
        (repo / "minilm" / "1").mkdir(parents=True)
        for f in ("config.json", "model.safetensors", "tokenizer.json", "1_Pooling"):
            (repo / "minilm" / "1" / f).symlink_to(MINILM / f)
        (repo / "minilm" / "config.toml").write_text('platform = "bert-embedding"\n')
    return repo


@contextlib.contextmanager
def serve(repo, log_dir, *flags):
    """`infermesh serve` on `repo` with `flags`, every port 0 (the ports it bound are read from
    its first line), its log in `log_dir`; stopped on exit. Yields {http, grpc, metrics, repo}."""
    binary = os.environ.get("INFERMESH_BIN", str(ROOT / "target" / "debug" / "infermesh"))
    log_path = Path(log_dir) / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [binary, "serve", "--model-repository", str(repo), "--host", "127.0.0.1",
             "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
             "--poll-interval", "0.2", *flags],
            stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        # Bounded: a server that neither starts nor fails does not hang the session.
        first = []
        reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        line = first[0] if first else None
        m = re.search(r"http (\S+) grpc (\S+) metrics (\S+)", line or "")
        assert m, (f"no start-up line from infermesh serve within {START_TIMEOUT_S} s"
                   if line is None else f"unexpected first line: {line!r}") + \
            f"; server log:\n{log_path.read_text()[-4000:]}"
        yield {"http": m.group(1), "grpc": m.group(2), "metrics": m.group(3), "repo": repo}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shared server: tests only read from it."""
    base = tmp_path_factory.mktemp("shared")
    with serve(write_repository(base / "repo"), base) as s:
        yield s


@pytest.fixture
def own_server(tmp_path):
    """A server of the test's own (fraud and fil_fraud; no minilm), free to be changed: its
    repository API may load and unload models (--enable-model-control)."""
    with serve(write_repository(tmp_path / "repo", minilm=False), tmp_path,
               "--enable-model-control") as s:
        yield s
