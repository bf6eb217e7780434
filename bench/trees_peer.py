#!/usr/bin/env python3
"""Peer timings for the tree benchmark: xgboost `inplace_predict`, lightgbm `predict`, and
tl2cgen-compiled code (when treelite/tl2cgen import), on the same bench models: the single row is the same deterministic row as
models/trees/benches/predict.rs; the 100k rows are drawn from the same uniform range.
Prints one JSON object (seconds)."""
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..")
FIX = os.path.join(ROOT, "models", "trees", "tests", "fixtures", "bench")
THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def rows(n, nf):
    # The xorshift sequence of benches/predict.rs, so both sides score the same rows.
    s = 0x9E3779B97F4A7C15
    out = np.empty(n * nf, dtype=np.float32)
    mask = (1 << 64) - 1
    for i in range(n * nf):
        s ^= (s << 13) & mask
        s ^= s >> 7
        s ^= (s << 17) & mask
        out[i] = ((s >> 40) / float(1 << 24)) * 6.0 - 3.0
    return out.reshape(n, nf)


def median_call(f, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter_ns()
        f()
        ts.append(time.perf_counter_ns() - t)
    return statistics.median(ts) / 1e9


def main():
    import lightgbm as lgb
    import xgboost as xgb

    one = rows(1, 30)
    rng = np.random.default_rng(0)
    many = rng.uniform(-3, 3, size=(100_000, 30)).astype(np.float32)
    holes = many.copy().reshape(-1)
    holes[::50] = np.nan  # every 50th value missing, as in the Rust bench
    holes = holes.reshape(many.shape)
    res = {"threads": THREADS, "xgboost": xgb.__version__, "lightgbm": lgb.__version__}
    bst = xgb.Booster(model_file=os.path.join(FIX, "xgb_bench.json"))
    bst.set_param({"nthread": THREADS})
    for _ in range(200):
        bst.inplace_predict(one)
    res["xgboost_1_row_s"] = median_call(lambda: bst.inplace_predict(one), 5000)
    res["xgboost_100k_s"] = median_call(lambda: bst.inplace_predict(many), 7)
    d1 = xgb.DMatrix(one, feature_names=bst.feature_names)
    res["xgboost_treeshap_1_row_s"] = median_call(lambda: bst.predict(d1, pred_contribs=True), 500)
    res["xgboost_100k_missing_s"] = median_call(lambda: bst.inplace_predict(holes), 7)
    lb = lgb.Booster(model_file=os.path.join(FIX, "lgb_bench.txt"))
    for _ in range(200):
        lb.predict(one, num_threads=1)
    res["lightgbm_1_row_s"] = median_call(lambda: lb.predict(one, num_threads=1), 5000)
    res["lightgbm_treeshap_1_row_s"] = median_call(lambda: lb.predict(one, pred_contrib=True, num_threads=1), 500)
    res["lightgbm_100k_s"] = median_call(lambda: lb.predict(many, num_threads=THREADS), 5)
    res["lightgbm_100k_missing_s"] = median_call(lambda: lb.predict(holes, num_threads=THREADS), 5)
    try:
        import tl2cgen
        import treelite

        tm = treelite.frontend.load_xgboost_model(os.path.join(FIX, "xgb_bench.json"))
        with tempfile.TemporaryDirectory() as d:
            lib = os.path.join(d, "bench.so")
            tl2cgen.export_lib(tm, toolchain="gcc", libpath=lib, params={"parallel_comp": THREADS})
            pred = tl2cgen.Predictor(lib, nthread=THREADS)
            d1 = tl2cgen.DMatrix(one)
            dm = tl2cgen.DMatrix(many)
            for _ in range(200):
                pred.predict(d1)
            res["tl2cgen_1_row_s"] = median_call(lambda: pred.predict(d1), 5000)
            res["tl2cgen_1_row_incl_dmatrix_s"] = median_call(lambda: pred.predict(tl2cgen.DMatrix(one)), 5000)
            res["tl2cgen_100k_s"] = median_call(lambda: pred.predict(dm), 7)
            res["tl2cgen"] = tl2cgen.__version__
    except Exception as e:  # noqa: BLE001 - report, do not fail the whole benchmark
        res["tl2cgen_error"] = f"{type(e).__name__}: {e}"
    json.dump(res, sys.stdout)
    print()


if __name__ == "__main__":
    main()
