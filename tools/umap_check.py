#!/usr/bin/env python3
"""Checks infermesh-topics' UMAP against umap-learn on the same inputs.

Runs in a venv that has the peer (this script installs nothing):

    python3 -m venv ~/.cache/infermesh/venv-topics-peer
    ~/.cache/infermesh/venv-topics-peer/bin/pip install umap-learn==0.5.12 scikit-learn numpy

Three steps, one folder:

    PY=~/.cache/infermesh/venv-topics-peer/bin/python
    $PY tools/umap_check.py prepare /tmp/umap-check      # inputs (CSV) + umap-learn layouts
    cargo run --release -p infermesh-topics --example umap_check -- /tmp/umap-check
    $PY tools/umap_check.py score /tmp/umap-check        # prints the table

Inputs: scikit-learn's digits (1797 x 64) and a blobs set (3000 x 32, 8 centres, plus 150
uniform noise rows). Each is laid out with umap-learn's defaults (2-d, min_dist 0.1,
euclidean) and with BERTopic's (5-d, min_dist 0, cosine), over several seeds, by both
implementations. Scores per layout: trustworthiness (sklearn.manifold.trustworthiness,
k = 15, in the input metric), neighbour agreement (mean share of each point's 15 nearest
input-space neighbours that are among its 15 nearest in the layout), and the 15-NN label
accuracy in the layout (the labels are never shown to either UMAP).
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits, make_blobs
from sklearn.manifold import trustworthiness
from sklearn.neighbors import NearestNeighbors

SEEDS = [42, 7, 1]
K = 15
CONFIGS = {
    "default": dict(n_components=2, min_dist=0.1, metric="euclidean"),
    "bertopic": dict(n_components=5, min_dist=0.0, metric="cosine"),
}


def datasets():
    digits = load_digits()
    yield "digits", digits.data.astype(np.float32), digits.target
    x, y = make_blobs(n_samples=3000, n_features=32, centers=8, cluster_std=2.0, random_state=0)
    rng = np.random.RandomState(0)
    noise = rng.uniform(x.min(), x.max(), size=(150, x.shape[1]))
    x = np.vstack([x, noise]).astype(np.float32)
    y = np.concatenate([y, np.full(150, -1)])
    yield "blobs", x, y


def prepare(folder: Path):
    import umap

    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, x, y in datasets():
        np.savetxt(folder / f"{name}.csv", x, delimiter=",", fmt="%.9g")
        np.savetxt(folder / f"{name}.labels.csv", y, fmt="%d")
        for cfg_name, cfg in CONFIGS.items():
            for seed in SEEDS:
                case = f"{name}-{cfg_name}-{seed}"
                reducer = umap.UMAP(n_neighbors=K, random_state=seed, **cfg)
                t = time.perf_counter()
                emb = reducer.fit_transform(x)
                secs = time.perf_counter() - t
                np.savetxt(folder / f"{case}.python.csv", emb, delimiter=",", fmt="%.9g")
                cases.append(dict(case=case, data=f"{name}.csv", seed=seed, python_seconds=secs, **cfg))
                print(f"{case}: umap-learn {secs:.2f} s", flush=True)
    (folder / "cases.json").write_text(json.dumps(cases, indent=1))


def neighbours(x, metric):
    nn = NearestNeighbors(n_neighbors=K + 1, metric=metric).fit(x)
    return nn.kneighbors(x, return_distance=False)[:, 1:]


def agreement(a, b):
    return float(np.mean([len(set(r) & set(s)) / K for r, s in zip(a, b)]))


def label_accuracy(idx, y):
    keep = y >= 0
    votes = [np.bincount(y[row][y[row] >= 0], minlength=y.max() + 1).argmax() if (y[row] >= 0).any() else -1 for row in idx]
    return float(np.mean(np.array(votes)[keep] == y[keep]))


def score(folder: Path):
    cases = json.loads((folder / "cases.json").read_text())
    rows = {}
    for c in cases:
        x = np.loadtxt(folder / c["data"], delimiter=",", dtype=np.float32)
        y = np.loadtxt(folder / c["data"].replace(".csv", ".labels.csv"), dtype=int)
        input_nn = neighbours(x, c["metric"])
        key = c["case"].rsplit("-", 1)[0]
        for side in ("python", "rust"):
            path = folder / f"{c['case']}.{side}.csv"
            if not path.exists():
                continue
            emb = np.loadtxt(path, delimiter=",", dtype=np.float32).reshape(len(x), -1)
            emb_nn = neighbours(emb, "euclidean")
            secs = c["python_seconds"] if side == "python" else json.loads(
                (folder / f"{c['case']}.rust.json").read_text())["seconds"]
            rows.setdefault((key, side), []).append((
                trustworthiness(x, emb, n_neighbors=K, metric=c["metric"]),
                agreement(input_nn, emb_nn),
                label_accuracy(emb_nn, y),
                secs,
            ))
    print(f"{'case':<18} {'impl':<10} {'trustworthiness':>22} {'neighbour agreement':>22} {'15-NN label acc':>18} {'seconds':>8}")
    for (key, side), vals in sorted(rows.items()):
        v = np.array(vals)
        m, s = v.mean(0), v.std(0)
        print(f"{key:<18} {side:<10} {m[0]:>14.4f} ± {s[0]:.4f} {m[1]:>14.4f} ± {s[1]:.4f} {m[2]:>10.4f} ± {s[2]:.4f} {m[3]:>8.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("prepare", "score"):
        sys.exit(__doc__)
    {"prepare": prepare, "score": score}[sys.argv[1]](Path(sys.argv[2]))
