"""Feast 0.67 itself (its own venv) against infermesh's feature store, both ways.

The repo under features/repo is copied to a temporary folder with a project name of its own
and the test Redis (INFERMESH_TEST_REDIS_URL) as its online store, then `feast apply` writes
its registry.db; `infermesh features serve` (INFERMESH_BIN) serves that registry and Redis on
a free port, read from its start-up line.
"""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serve_process import started  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120


def redis_url():
    return os.environ.get("INFERMESH_TEST_REDIS_URL") or "redis://127.0.0.1:6379"


def feast_connection_string(url):
    """redis://HOST:PORT[/DB] as Feast's `host:port,db=N`."""
    u = urlparse(url)
    db = (u.path or "/0").strip("/") or "0"
    return f"{u.hostname}:{u.port or 6379},db={db}"


def binary():
    return os.environ.get("INFERMESH_BIN", str(ROOT / "target" / "debug" / "infermesh"))


def feast_cli():
    return str(Path(sys.executable).parent / "feast")


def write_yaml(repo, project, online_store):
    (repo / "feature_store.yaml").write_text(
        f"project: {project}\n"
        "registry: data/registry.db\n"
        "provider: local\n"
        f"online_store:\n{online_store}"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n")


@pytest.fixture(scope="session")
def repo(tmp_path_factory):
    """The feature repo, applied with Feast, under a project no other run uses."""
    root = tmp_path_factory.mktemp("feast")
    repo = root / "repo"
    shutil.copytree(ROOT / "features" / "repo", repo,
                    ignore=shutil.ignore_patterns("data", "__pycache__"))
    (repo / "data").mkdir()
    project = f"infermesh_{os.getpid()}_{int(time.time())}"
    write_yaml(repo, project,
               f"  type: redis\n  connection_string: \"{feast_connection_string(redis_url())}\"\n")
    subprocess.run([feast_cli(), "apply"], cwd=repo, check=True, capture_output=True, text=True)
    assert (repo / "data" / "registry.db").is_file()
    return repo, project


@pytest.fixture(scope="session")
def server(repo, tmp_path_factory):
    """`infermesh features serve` on the applied registry and the same Redis."""
    path, project = repo
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    cmd = [binary(), "features", "serve", "--port", "0",
           "--registry", str(path / "data" / "registry.db"), "--project", project,
           "--redis-url", redis_url()]
    with started(cmd, log_path, START_TIMEOUT_S) as first:
        m = re.search(r"grpc\+http (\S+)", first or "")
        assert m, f"no start-up line from infermesh features serve; log:\n{log_path.read_text()}"
        yield m.group(1)
