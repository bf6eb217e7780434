#!/usr/bin/env bash
# Tree prediction, side by side: infermesh (criterion, models/trees/benches/predict.rs)
# against xgboost inplace_predict, lightgbm predict and tl2cgen compiled code
# (bench/trees_peer.py), on the issue's fixture (binary:logistic, 100 trees, depth 6,
# 30 features), 2 threads. Prints medians and ratios.
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
ensure_venv venv-bench-peers bench/requirements-peers.txt 'import xgboost, lightgbm'
export RAYON_NUM_THREADS=${BENCH_THREADS:-2}
cargo bench -p infermesh-trees --bench predict -- --warm-up-time 1 --measurement-time 4 >&2
# treelite logs to stdout: the JSON is the last line.
PEER=$("$CACHE/venv-bench-peers/bin/python" bench/trees_peer.py | tail -n 1)
"$CACHE/venv-bench-peers/bin/python" - "$CARGO_TARGET_DIR/criterion" "$PEER" <<'PY'
import json, os, sys
crit, peer = sys.argv[1], json.loads(sys.argv[2])
def get(path):
    # criterion writes target/criterion/<id with / as _>/new/estimates.json; groups nest.
    p = os.path.join(crit, *path.split("/"), "new", "estimates.json")
    return json.load(open(p))["median"]["point_estimate"] / 1e9
out = {"peer": peer}
for lib in ("xgboost", "lightgbm"):
    one = get(f"{lib}_predict_1_row")
    batch = get(f"{lib}_batch/predict_100k_rows")
    holes = get(f"{lib}_batch/predict_100k_rows_2pct_missing")
    shap = get(f"{lib}_treeshap_1_row")
    out[lib] = {"infermesh_1_row_us": one * 1e6, "infermesh_100k_ms": batch * 1e3, "infermesh_treeshap_1_row_us": shap * 1e6,
                f"{lib}_1_row_us": peer[f"{lib}_1_row_s"] * 1e6, f"{lib}_100k_ms": peer[f"{lib}_100k_s"] * 1e3,
                "infermesh_100k_missing_ms": holes * 1e3, f"{lib}_100k_missing_ms": peer[f"{lib}_100k_missing_s"] * 1e3,
                "speedup_1_row": peer[f"{lib}_1_row_s"] / one, "speedup_100k": peer[f"{lib}_100k_s"] / batch,
                "speedup_100k_missing": peer[f"{lib}_100k_missing_s"] / holes,
                f"{lib}_treeshap_1_row_us": peer[f"{lib}_treeshap_1_row_s"] * 1e6,
                "speedup_treeshap_1_row": peer[f"{lib}_treeshap_1_row_s"] / shap}
if "tl2cgen_1_row_s" in peer:
    out["tl2cgen"] = {"tl2cgen_1_row_us": peer["tl2cgen_1_row_s"] * 1e6, "tl2cgen_100k_ms": peer["tl2cgen_100k_s"] * 1e3,
                      "speedup_1_row": peer["tl2cgen_1_row_s"] / get("xgboost_predict_1_row"),
                      "speedup_100k": peer["tl2cgen_100k_s"] / get("xgboost_batch/predict_100k_rows")}
print(json.dumps(out, indent=1))
PY
