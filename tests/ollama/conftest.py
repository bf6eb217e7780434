"""`infermesh llm serve` for the official Ollama Python client's tests.

The binary comes from INFERMESH_BIN; the server runs the default model (SmolLM2-135M-Instruct
as `smollm2:135m`) and MiniLM (`all-minilm`) from the model cache on a free port, read from its
start-up line, and is stopped after the session.
"""
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serve_process import started  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def llm_url(tmp_path_factory):
    binary = os.environ.get("INFERMESH_BIN", str(ROOT / "target" / "debug" / "infermesh"))
    log_path = tmp_path_factory.mktemp("llm") / "server.log"
    cmd = [binary, "llm", "serve", "--port", "0", "--max-queue", "4"]
    with started(cmd, log_path, START_TIMEOUT_S) as first:
        m = re.search(r"on (http://\S+)", first or "")
        assert m, f"no start-up line from infermesh llm serve; log:\n{log_path.read_text()}"
        yield m.group(1)
