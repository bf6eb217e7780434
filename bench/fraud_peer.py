"""Python side of bench/fraud.sh: xgboost and lightgbm with their defaults and 200 rounds on
the same table and the same split column as `infermesh train fraud --split-column split`,
PR-AUC (sklearn average_precision_score) and ROC AUC on the test rows, and LightGBM's
training time with early stopping on the validation rows (the same protocol as ours).

usage: fraud_peer.py TABLE.csv THREADS -> one JSON line
"""
import json
import sys
import time

import lightgbm as lgb
import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import average_precision_score, roc_auc_score


def main(path, threads):
    df = pd.read_csv(path)
    parts = {p: df[df.split == p] for p in ("train", "valid", "test")}
    feats = [c for c in df.columns if c not in ("Class", "split")]
    X = {p: d[feats].to_numpy(dtype=np.float64) for p, d in parts.items()}
    y = {p: d["Class"].to_numpy() for p, d in parts.items()}
    out = {}

    t0 = time.perf_counter()
    m = xgb.XGBClassifier(n_estimators=200, n_jobs=threads)
    m.fit(X["train"], y["train"])
    out["xgboost_fit_seconds"] = time.perf_counter() - t0
    p = m.predict_proba(X["test"])[:, 1]
    out["xgboost_pr_auc"] = float(average_precision_score(y["test"], p))
    out["xgboost_roc_auc"] = float(roc_auc_score(y["test"], p))

    t0 = time.perf_counter()
    m = lgb.LGBMClassifier(n_estimators=200, n_jobs=threads, verbosity=-1)
    m.fit(X["train"], y["train"])
    out["lightgbm_fit_seconds"] = time.perf_counter() - t0
    p = m.predict_proba(X["test"])[:, 1]
    out["lightgbm_pr_auc"] = float(average_precision_score(y["test"], p))
    out["lightgbm_roc_auc"] = float(roc_auc_score(y["test"], p))

    # The protocol of `infermesh train fraud`'s defaults: learning rate 0.05, up to 1000
    # rounds, early stopping after 50 on validation average precision.
    params = dict(objective="binary", metric="average_precision", learning_rate=0.05,
                  num_leaves=31, min_data_in_leaf=20, verbosity=-1, num_threads=threads,
                  deterministic=True, seed=42)
    t0 = time.perf_counter()
    dtrain = lgb.Dataset(X["train"], y["train"])
    dvalid = lgb.Dataset(X["valid"], y["valid"], reference=dtrain)
    b = lgb.train(params, dtrain, num_boost_round=1000, valid_sets=[dvalid],
                  callbacks=[lgb.early_stopping(50, verbose=False)])
    out["lightgbm_es_fit_seconds"] = time.perf_counter() - t0
    p = b.predict(X["test"], num_iteration=b.best_iteration)
    out["lightgbm_es_pr_auc"] = float(average_precision_score(y["test"], p))
    out["lightgbm_es_best_iteration"] = int(b.best_iteration)
    out["rows"] = {k: int(len(v)) for k, v in y.items()}
    out["positives"] = {k: int(v.sum()) for k, v in y.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
