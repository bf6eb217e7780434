#!/usr/bin/env bash
# Isolation Forest, side by side with scikit-learn's (bench/anomaly_peer.py) on the ULB
# credit-card table of bench/creditcard_table.py (the fraud benchmark's rows and split): both
# fit 100 trees of min(256, n) rows, contamination "auto", on the train + valid rows without
# labels, and score the test rows; ROC-AUC and average precision of the negated score against
# the fraud label, fit seconds (`infermesh train anomaly`'s card; scikit-learn's `fit`), and
# scoring seconds for one row and for 100,000 rows (infermesh:
# models/anomaly/examples/score_timing.rs, one thread and all threads; scikit-learn:
# `score_samples`). Per seed in SEEDS (default "1 2 3"); medians. INFERMESH_BIN uses that
# binary instead of building the release binary.
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
DATA="${INFERMESH_DATA:-$ROOT/../shared/data}/creditcard-fraud-ulb"
SEEDS=${SEEDS:-1 2 3}
WORK="$CACHE/bench-anomaly"
mkdir -p "$WORK"
[ -f "$DATA/creditcard_random5000.csv" ] || { echo "missing $DATA" >&2; exit 1; }
ensure_venv venv-anomaly-peer bench/requirements-anomaly-peer.txt 'import sklearn, pandas'
PY="$CACHE/venv-anomaly-peer/bin/python"
if [ -n "${INFERMESH_BIN:-}" ]; then
  BIN="$INFERMESH_BIN"
else
  cargo build --release --locked -p infermesh --bin infermesh >&2
  BIN="$CARGO_TARGET_DIR/release/infermesh"
fi
cargo build --release --locked -p infermesh-anomaly --example score_timing >&2
TIMER="$CARGO_TARGET_DIR/release/examples/score_timing"
for seed in $SEEDS; do
  "$PY" bench/creditcard_table.py "$DATA" "$WORK/table-$seed.csv" "$seed"
  log "seed $seed: scikit-learn IsolationForest"
  "$PY" bench/anomaly_peer.py "$WORK/table-$seed.csv" "$seed" "$WORK/test-rows-$seed.csv" > "$WORK/peer-$seed.json"
  log "seed $seed: infermesh train anomaly"
  rm -rf "$WORK/model-$seed"
  "$BIN" train anomaly --json --data "$WORK/table-$seed.csv" --label Class --split-column split \
    --seed "$seed" --out "$WORK/model-$seed" > "$WORK/ours-$seed.json"
  "$TIMER" "$WORK/model-$seed/isolation_forest.json" "$WORK/test-rows-$seed.csv" > "$WORK/timing-$seed.json"
done
python3 - "$WORK" "$SEEDS" <<'PY'
import json, statistics as st, sys
work, seeds = sys.argv[1], sys.argv[2].split()
peer = [json.load(open(f"{work}/peer-{s}.json")) for s in seeds]
ours = [json.load(open(f"{work}/ours-{s}.json")) for s in seeds]
timing = [json.load(open(f"{work}/timing-{s}.json")) for s in seeds]
med = st.median
out = {
    "seeds": seeds, "fit_rows": peer[0]["fit_rows"], "test_rows": peer[0]["test_rows"],
    "roc_auc": {"infermesh": med([o["metrics"]["roc_auc"] for o in ours]), "sklearn": med([p["roc_auc"] for p in peer]),
                "infermesh_per_seed": [o["metrics"]["roc_auc"] for o in ours], "sklearn_per_seed": [p["roc_auc"] for p in peer]},
    "pr_auc": {"infermesh": med([o["metrics"]["pr_auc"] for o in ours]), "sklearn": med([p["pr_auc"] for p in peer])},
    "train_score_p50": {"infermesh": med([o["train_scores"]["p50"] for o in ours]), "sklearn": med([p["train_scores"]["p50"] for p in peer])},
    "train_score_p01": {"infermesh": med([o["train_scores"]["p01"] for o in ours]), "sklearn": med([p["train_scores"]["p01"] for p in peer])},
    "fit_seconds": {"infermesh": med([o["fit_seconds"] for o in ours]), "sklearn": med([p["fit_seconds"] for p in peer])},
    "one_row_seconds": {"infermesh": med([t["one_row_p50_seconds"] for t in timing]), "sklearn": med([p["one_row_p50_seconds"] for p in peer])},
    "rows_100k_seconds": {"infermesh_1_thread": med([t["rows_100k_seconds_1_thread"] for t in timing]),
                          "infermesh_all_threads": med([t["rows_100k_seconds_all_threads"] for t in timing]),
                          "sklearn": med([p["rows_100k_seconds"] for p in peer])},
}
out["ratios"] = {
    "fit": out["fit_seconds"]["sklearn"] / out["fit_seconds"]["infermesh"],
    "one_row": out["one_row_seconds"]["sklearn"] / out["one_row_seconds"]["infermesh"],
    "rows_100k_1_thread": out["rows_100k_seconds"]["sklearn"] / out["rows_100k_seconds"]["infermesh_1_thread"],
    "rows_100k_all_threads": out["rows_100k_seconds"]["sklearn"] / out["rows_100k_seconds"]["infermesh_all_threads"],
}
print(json.dumps(out, indent=1))
PY
