"""`infermesh drift --embeddings` against Evidently 0.7.23's embedding drift on fresh random
embeddings: every method (model, mmd, distance with each distance, ratio), with and without
bootstrap, references on both sides of Evidently's 1,000-row default switch. The score must
match within 1e-6 and the decision exactly. Evidently's methods are called as its
EmbeddingsDrift metric calls them (`method(current[cols], reference[cols])`); one case goes
through `Report([EmbeddingsDrift(...)])` itself for the default method. The seed is printed;
DRIFT_SEED=... replays a run. INFERMESH_BIN is the binary under test.
"""

import json
import os
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.metrics.data_drift.embedding_drift_methods import distance, mmd, model, ratio
from evidently.metrics import EmbeddingsDrift

BIN = os.environ.get("INFERMESH_BIN", "target/debug/infermesh")
SEED = int(os.environ.get("DRIFT_SEED", time.time_ns() % (1 << 31)))

CASES = [
    ("model", {}, model()),
    ("model", {"bootstrap": True}, model(bootstrap=True)),
    ("mmd", {}, mmd()),
    ("mmd", {"bootstrap": True}, mmd(bootstrap=True)),
    ("distance", {}, distance()),
    ("distance", {"distance": "cosine"}, distance(dist="cosine")),
    ("distance", {"distance": "cityblock", "bootstrap": True}, distance(dist="cityblock", bootstrap=True)),
    ("distance", {"distance": "chebyshev"}, distance(dist="chebyshev")),
    ("ratio", {}, ratio()),
]


def tables(rng, n_ref, n_cur, dim, shift):
    cols = [f"e{i}" for i in range(dim)]
    base = rng.normal(size=(n_ref, dim))
    cur = rng.normal(size=(n_cur, dim)) + shift * rng.normal(size=dim)
    ref = pd.DataFrame(base, columns=cols)
    current = pd.DataFrame(cur, columns=cols)
    # A column outside the embedding, tested column by column as usual.
    ref["amount"] = rng.lognormal(3, 1, n_ref)
    current["amount"] = rng.lognormal(3, 1, n_cur)
    return ref, current, cols


def infermesh(tmp_path, ref, cur, method, opts):
    r, c = tmp_path / "reference.parquet", tmp_path / "current.parquet"
    ref.to_parquet(r)
    cur.to_parquet(c)
    args = [BIN, "drift", "--reference", str(r), "--current", str(c), "--json", "--embeddings", "emb=e*"]
    if method:
        args += ["--embeddings-method", method]
    if "distance" in opts:
        args += ["--embeddings-distance", opts["distance"]]
    if "bootstrap" in opts:
        args += ["--embeddings-bootstrap", "true" if opts["bootstrap"] else "false"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_each_method_equals_evidently(tmp_path, case):
    name, opts, method = CASES[case]
    rng = np.random.default_rng([SEED, case])
    n_ref = int(rng.choice([rng.integers(200, 1000), rng.integers(1000, 1600)]))
    n_cur = int(rng.integers(150, 1400))
    dim = int(rng.integers(3, 24))
    shift = float(rng.choice([0.0, 0.05, 0.3]))
    ref, cur, cols = tables(rng, n_ref, n_cur, dim, shift)
    print(f"DRIFT_SEED={SEED} case {case}: {name} {opts} ref {n_ref} cur {n_cur} dim {dim} shift {shift}")
    score, detected, method_name = method(cur[cols].copy(), ref[cols].copy())
    got = infermesh(tmp_path, ref, cur, name, opts)
    e = got["embeddings"]["emb"]
    assert e["method_name"] == method_name
    assert e["columns"] == dim
    assert abs(e["drift_score"] - float(score)) < 1e-6, (e, score)
    assert e["drift_detected"] == bool(detected), (e, score, detected)
    # The embedding's columns are tested as a whole, the others column by column.
    assert list(got["columns"]) == ["amount"]


def test_the_default_method_through_evidently_report(tmp_path):
    rng = np.random.default_rng([SEED, 99])
    for n_ref in (int(rng.integers(300, 1000)), int(rng.integers(1000, 1400))):
        ref, cur, cols = tables(rng, n_ref, int(rng.integers(300, 900)), 6, 0.2)
        definition = DataDefinition(numerical_columns=cols + ["amount"], embeddings={"emb": cols})
        snapshot = Report([EmbeddingsDrift(embeddings_name="emb")]).run(
            Dataset.from_pandas(cur.copy(), data_definition=definition),
            Dataset.from_pandas(ref.copy(), data_definition=definition),
        )
        value = snapshot.dict()["metrics"][0]["value"]
        got = infermesh(tmp_path, ref, cur, None, {})["embeddings"]["emb"]
        assert got["method_name"] == "model"
        assert got["bootstrap"] == (n_ref < 1000)
        assert abs(got["drift_score"] - float(value)) < 1e-6, (got, value)
