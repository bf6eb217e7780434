"""LightFM side of bench/recs.sh: MovieLens 100k, LightFM's own split (ua.base / ua.test),
ratings >= 4 as positives, the matrix shaped over every id of both files (as LightFM's
`fetch_movielens` builds it). Fits LightFM (WARP, Adagrad, learning rate 0.05) and scores it
with `lightfm.evaluation` with the training interactions excluded.

usage: recs_peer.py DATA_DIR COMPONENTS EPOCHS THREADS SEED  -> one JSON line
"""
import json
import sys
import time

import numpy as np
import scipy.sparse as sp
from lightfm import LightFM
from lightfm.evaluation import auc_score, precision_at_k, recall_at_k


def read(path):
    return np.loadtxt(path, dtype=np.int64, usecols=(0, 1, 2))


def main(data, components, epochs, threads, seed):
    base, test = read(f"{data}/ua.base"), read(f"{data}/ua.test")
    users = int(max(base[:, 0].max(), test[:, 0].max()))
    items = int(max(base[:, 1].max(), test[:, 1].max()))

    def matrix(rows):
        rows = rows[rows[:, 2] >= 4]
        return sp.coo_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows[:, 0] - 1, rows[:, 1] - 1)),
            shape=(users, items),
        ).tocsr().tocoo()

    train, test_m = matrix(base), matrix(test)
    model = LightFM(no_components=components, loss="warp", learning_rate=0.05, random_state=seed)
    t0 = time.perf_counter()
    model.fit(train, epochs=epochs, num_threads=threads)
    fit_s = time.perf_counter() - t0
    kw = dict(train_interactions=train, num_threads=threads)
    print(json.dumps({
        "precision_at_10": float(precision_at_k(model, test_m, k=10, **kw).mean()),
        "recall_at_10": float(recall_at_k(model, test_m, k=10, **kw).mean()),
        "auc": float(auc_score(model, test_m, **kw).mean()),
        "fit_seconds": fit_s,
        "users": users, "items": items,
        "train_positives": int(train.nnz), "test_positives": int(test_m.nnz),
    }))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
