#!/usr/bin/env python3
"""Generates the tree-engine fixtures under models/trees/tests/fixtures/ with the real
xgboost and lightgbm libraries: small models covering every supported objective, missing
values, categorical splits and zero-as-missing, each with inputs, the library's own
predictions and its exact TreeSHAP contributions; plus the benchmark models (binary
logistic, 100 trees, depth 6, 30 features) in XGBoost JSON/UBJ and LightGBM text.

Deterministic (fixed seeds). Tests read the committed outputs and never need Python.
Regenerate with:

    python3 -m venv ~/.cache/infermesh/venv-fixtures
    ~/.cache/infermesh/venv-fixtures/bin/pip install -r tools/requirements-fixtures.txt
    ~/.cache/infermesh/venv-fixtures/bin/python tools/gen_tree_fixtures.py
"""
import json
import os

import lightgbm as lgb
import numpy as np
import xgboost as xgb

OUT = os.path.join(os.path.dirname(__file__), "..", "models", "trees", "tests", "fixtures")
BENCH = os.path.join(OUT, "bench")


def data(n, nf, rng, nan_rate=0.1):
    X = rng.normal(size=(n, nf)).astype(np.float32)
    X[rng.random((n, nf)) < nan_rate] = np.nan
    return X


def enc(a):
    return [[None if np.isnan(v) else float(v) for v in row] for row in np.atleast_2d(a)]


def write_case(name, model_file, fmt, X, pred, contribs):
    case = {"model": model_file, "format": fmt, "inputs": enc(X),
            "predict": np.asarray(pred, dtype=np.float64).reshape(len(X), -1).tolist(),
            "contribs": np.asarray(contribs, dtype=np.float64).reshape(len(X), -1).tolist()}
    with open(os.path.join(OUT, name + ".expected.json"), "w") as fh:
        json.dump(case, fh)


def xgb_cases(rng):
    nf = 6
    names = [f"feat_{i}" for i in range(nf)]
    X = data(600, nf, rng)
    signal = np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1]) * np.nan_to_num(X[:, 2])
    y_bin = (signal + rng.normal(scale=0.5, size=len(X)) > 0).astype(int)
    y_reg = signal * 3 + rng.normal(scale=0.1, size=len(X))
    y_multi = np.digitize(signal, [-0.7, 0.7])
    Xt = data(40, nf, rng, nan_rate=0.2)
    Xt[0, :] = np.nan  # an all-missing row
    cases = [
        ("xgb_binary_logistic", {"objective": "binary:logistic", "max_depth": 4, "base_score": 0.3}, y_bin, 20),
        ("xgb_binary_logitraw", {"objective": "binary:logitraw", "max_depth": 3}, y_bin, 15),
        ("xgb_reg_squarederror", {"objective": "reg:squarederror", "max_depth": 5}, y_reg, 25),
        ("xgb_multi_softprob", {"objective": "multi:softprob", "num_class": 3, "max_depth": 3}, y_multi, 10),
        ("xgb_multi_softmax", {"objective": "multi:softmax", "num_class": 3, "max_depth": 3}, y_multi, 10),
    ]
    for name, params, y, rounds in cases:
        params = dict(params, eta=0.3, seed=3, nthread=1)
        d = xgb.DMatrix(X, label=y, feature_names=names, missing=np.nan)
        bst = xgb.train(params, d, num_boost_round=rounds)
        dt = xgb.DMatrix(Xt, feature_names=names, missing=np.nan)
        pred = bst.predict(dt)
        contribs = bst.predict(dt, pred_contribs=True)
        for ext, fmt in (("json", "xgboost_json"), ("ubj", "xgboost_ubj")):
            file = f"{name}.{ext}"
            bst.save_model(os.path.join(OUT, file))
            write_case(f"{name}.{ext}", file, fmt, Xt, pred, contribs)


def lgb_cases(rng):
    nf = 5
    names = [f"col_{i}" for i in range(nf)]
    X = data(1500, nf, rng, nan_rate=0.08).astype(np.float64)
    X[:, 4] = rng.integers(0, 12, size=len(X))  # a categorical feature
    X[rng.random(len(X)) < 0.05, 4] = np.nan
    signal = (np.nan_to_num(X[:, 0]) - np.nan_to_num(X[:, 1])
              + np.isin(X[:, 4], [1, 3, 7, 10]) * 1.5)
    y_bin = (signal + rng.normal(scale=0.5, size=len(X)) > 0.3).astype(int)
    y_reg = signal * 2 + rng.normal(scale=0.1, size=len(X))
    y_multi = np.digitize(signal, [-0.5, 0.8])
    Xt = data(40, nf, rng, nan_rate=0.15).astype(np.float64)
    Xt[:, 4] = rng.integers(-1, 14, size=len(Xt))
    Xt[:3, 4] = np.nan
    Xt[3, 4] = 2.5
    Xt[4:8, 0] = 0.0  # exact zeros, for zero_as_missing
    base = {"num_leaves": 15, "learning_rate": 0.2, "min_data_in_leaf": 10, "verbose": -1,
            "seed": 5, "num_threads": 1, "deterministic": True, "min_data_per_group": 5,
            "cat_smooth": 1, "max_cat_to_onehot": 4}
    cases = [
        ("lgb_binary", dict(base, objective="binary"), y_bin, 20, [4]),
        ("lgb_regression", dict(base, objective="regression"), y_reg, 25, [4]),
        ("lgb_multiclass", dict(base, objective="multiclass", num_class=3), y_multi, 10, [4]),
        ("lgb_binary_zero_as_missing", dict(base, objective="binary", zero_as_missing=True), y_bin, 15, []),
        ("lgb_regression_no_missing", dict(base, objective="regression", use_missing=False), y_reg, 15, []),
    ]
    for name, params, y, rounds, cats in cases:
        Xtrain = X.copy()
        if params.get("zero_as_missing"):
            Xtrain[rng.random(len(X)) < 0.2, 0] = 0.0
        ds = lgb.Dataset(Xtrain, label=y, feature_name=names, categorical_feature=cats or "auto",
                         free_raw_data=False)
        bst = lgb.train(params, ds, num_boost_round=rounds)
        file = f"{name}.txt"
        bst.save_model(os.path.join(OUT, file))
        Xf = Xt.astype(np.float32).astype(np.float64)  # what an f32 server sees
        pred = bst.predict(Xf)
        contribs = bst.predict(Xf, pred_contrib=True)
        write_case(name, file, "lightgbm", Xf, pred, contribs)


def bench_models(rng):
    nf = 30
    names = [f"f{i}" for i in range(nf)]
    X = rng.normal(size=(20000, nf)).astype(np.float32)
    X[rng.random(X.shape) < 0.02] = np.nan
    w = rng.normal(size=nf)
    logit = np.nan_to_num(X) @ w * 0.4 + np.nan_to_num(X[:, 0] * X[:, 1]) - 2.5
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-logit))).astype(int)
    bst = xgb.train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "seed": 1, "nthread": 2},
                    xgb.DMatrix(X, label=y, feature_names=names), num_boost_round=100)
    bst.save_model(os.path.join(BENCH, "xgb_bench.json"))
    bst.save_model(os.path.join(BENCH, "xgb_bench.ubj"))
    lb = lgb.train({"objective": "binary", "max_depth": 6, "num_leaves": 63, "learning_rate": 0.1,
                    "verbose": -1, "seed": 1, "num_threads": 2, "deterministic": True},
                   lgb.Dataset(X, label=y, feature_name=names), num_boost_round=100)
    lb.save_model(os.path.join(BENCH, "lgb_bench.txt"))
    Xt = rng.normal(size=(50, nf)).astype(np.float32)
    Xt[rng.random(Xt.shape) < 0.05] = np.nan
    dt = xgb.DMatrix(Xt, feature_names=names)
    write_case("bench/xgb_bench.json", "bench/xgb_bench.json", "xgboost_json", Xt, bst.predict(dt),
               bst.predict(dt, pred_contribs=True))
    write_case("bench/xgb_bench.ubj", "bench/xgb_bench.ubj", "xgboost_ubj", Xt, bst.predict(dt),
               bst.predict(dt, pred_contribs=True))
    Xf = Xt.astype(np.float64)
    write_case("bench/lgb_bench", "bench/lgb_bench.txt", "lightgbm", Xf, lb.predict(Xf),
               lb.predict(Xf, pred_contrib=True))


def main():
    os.makedirs(BENCH, exist_ok=True)
    rng = np.random.default_rng(20261122)
    xgb_cases(rng)
    lgb_cases(rng)
    bench_models(rng)
    print("xgboost", xgb.__version__, "lightgbm", lgb.__version__)


if __name__ == "__main__":
    main()
