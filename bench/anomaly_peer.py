"""scikit-learn's IsolationForest on a bench/creditcard_table.py table, for bench/anomaly.sh.

`python bench/anomaly_peer.py TABLE.csv SEED ROWS_OUT.csv`: fits
`IsolationForest(n_estimators=100, max_samples="auto", contamination="auto", random_state=SEED)`
on the train and valid rows' features (no Class, no split), as `infermesh train anomaly
--label Class --split-column split` does, and prints one JSON line: the test rows' ROC-AUC
and average precision of the negated `score_samples`, the fit seconds, the median seconds of
`score_samples` on one row (over 200 calls; each call pays scikit-learn's per-call checks)
and on 100,000 rows (the test rows repeated; one thread, as its default n_jobs=None scores),
and quantiles of the training scores. Writes the test rows' features to ROWS_OUT.csv for
infermesh's scoring timer (models/anomaly/examples/score_timing.rs).
"""

import json
import statistics
import sys
import time

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score

table, seed, rows_out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
df = pd.read_csv(table)
features = [c for c in df.columns if c not in ("Class", "split")]
fit_rows = df[df.split != "test"]
test = df[df.split == "test"]
X = fit_rows[features].to_numpy(dtype=np.float64)
t0 = time.perf_counter()
model = IsolationForest(n_estimators=100, max_samples="auto", contamination="auto", random_state=seed).fit(X)
fit_seconds = time.perf_counter() - t0
Xt = test[features].to_numpy(dtype=np.float64)
scores = model.score_samples(Xt)
labels = test.Class.to_numpy() == 1
one = []
for i in range(200):
    row = Xt[i % len(Xt)].reshape(1, -1)
    t = time.perf_counter()
    model.score_samples(row)
    one.append(time.perf_counter() - t)
big = np.tile(Xt, (100_000 // len(Xt) + 1, 1))[:100_000]
many = []
for _ in range(3):
    t = time.perf_counter()
    model.score_samples(big)
    many.append(time.perf_counter() - t)
train_scores = np.sort(model.score_samples(X))
test[features].to_csv(rows_out, index=False)
print(json.dumps({
    "roc_auc": roc_auc_score(labels, -scores),
    "pr_auc": average_precision_score(labels, -scores),
    "fit_seconds": fit_seconds,
    "one_row_p50_seconds": statistics.median(one),
    "rows_100k_seconds": statistics.median(many),
    "train_scores": {q: float(np.quantile(train_scores, p)) for q, p in (("p01", 0.01), ("p50", 0.5), ("p99", 0.99))},
    "fit_rows": len(X),
    "test_rows": len(Xt),
}))
