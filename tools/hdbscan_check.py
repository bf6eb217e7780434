#!/usr/bin/env python3
"""Checks infermesh-topics' HDBSCAN against the hdbscan library (BERTopic's clusterer).

Runs in the venv of tools/umap_check.py plus `pip install hdbscan==0.8.44`, after
`umap_check.py prepare DIR` (it clusters umap-learn's 5-d BERTopic-style layouts):

    PY=~/.cache/infermesh/venv-topics-peer/bin/python
    $PY tools/hdbscan_check.py DIR
    cargo run --release -p infermesh-topics --example hdbscan_check -- DIR

For each layout, nine rows in ten are clustered with BERTopic's settings
(min_cluster_size 10, euclidean, eom, prediction_data) and the tenth row is assigned with
`approximate_predict`; the labels and probabilities are written for the Rust side, which
clusters the same rows and prints how far it is from them (and from the library's exact
"generic" algorithm, since its default minimum spanning tree is approximate).
"""
import json
import sys
from pathlib import Path

import hdbscan
import numpy as np

folder = Path(sys.argv[1])
cases = []
for case in ["digits-bertopic-42", "blobs-bertopic-42"]:
    x = np.loadtxt(folder / f"{case}.python.csv", delimiter=",", dtype=np.float32)
    test = np.arange(len(x)) % 10 == 9
    train, new = x[~test], x[test]
    c = hdbscan.HDBSCAN(min_cluster_size=10, metric="euclidean", cluster_selection_method="eom",
                        prediction_data=True).fit(train)
    labels, probs = hdbscan.approximate_predict(c, new)
    # The library's default MST (Boruvka, approx_min_span_tree=True) is approximate; its
    # "generic" algorithm (Prim on the full mutual reachability matrix) is exact.
    exact = hdbscan.HDBSCAN(min_cluster_size=10, algorithm="generic").fit(train.astype(np.float64))
    name = f"hdbscan-{case}"
    np.savetxt(folder / f"{name}.train.csv", train, delimiter=",", fmt="%.9g")
    np.savetxt(folder / f"{name}.new.csv", new, delimiter=",", fmt="%.9g")
    np.savetxt(folder / f"{name}.labels.csv", c.labels_, fmt="%d")
    np.savetxt(folder / f"{name}.probabilities.csv", c.probabilities_, fmt="%.17g")
    np.savetxt(folder / f"{name}.exact_labels.csv", exact.labels_, fmt="%d")
    np.savetxt(folder / f"{name}.exact_probabilities.csv", exact.probabilities_, fmt="%.17g")
    np.savetxt(folder / f"{name}.predicted.csv", labels, fmt="%d")
    np.savetxt(folder / f"{name}.predicted_probabilities.csv", probs, fmt="%.17g")
    cases.append(name)
    print(f"{name}: {c.labels_.max() + 1} clusters, {np.sum(c.labels_ < 0)} noise of {len(train)}")
(folder / "hdbscan_cases.json").write_text(json.dumps(cases))
