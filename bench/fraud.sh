#!/usr/bin/env bash
# Fraud trainer quality and speed, side by side with xgboost and lightgbm (Python,
# bench/fraud_peer.py) on the ULB credit-card table of bench/creditcard_table.py (all frauds
# plus a uniform sample of normal rows, Time dropped, duplicates removed, a stratified
# 70/15/15 split by seed as a `split` column that both sides use), built under the cache,
# never in the repository. Env: SEEDS ("1 2 3"), THREADS (2),
# TUNE (30: trials of `--tune`, run as a second infermesh row; 0 skips it).
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
DATA="${INFERMESH_DATA:-$ROOT/../shared/data}/creditcard-fraud-ulb"
SEEDS=${SEEDS:-1 2 3}
THREADS=${THREADS:-2}
TUNE=${TUNE:-30}
WORK="$CACHE/bench-fraud"
mkdir -p "$WORK"
[ -f "$DATA/creditcard_random5000.csv" ] || { echo "missing $DATA" >&2; exit 1; }
ensure_venv venv-fraud-peer bench/requirements-fraud-peer.txt 'import xgboost, lightgbm, sklearn, pandas'
PY="$CACHE/venv-fraud-peer/bin/python"
log "release build"
cargo build --release --locked --workspace --bins --examples >&2
BIN="$CARGO_TARGET_DIR/release/infermesh"

for seed in $SEEDS; do
  "$PY" bench/creditcard_table.py "$DATA" "$WORK/table-$seed.csv" "$seed"
  log "seed $seed: Python peers"
  "$PY" bench/fraud_peer.py "$WORK/table-$seed.csv" "$THREADS" > "$WORK/peer-$seed.json"
  log "seed $seed: infermesh train fraud"
  rm -rf "$WORK/model-$seed"
  "$BIN" train fraud --quiet --json --data "$WORK/table-$seed.csv" --label Class \
    --split-column split --threads "$THREADS" --seed 42 --out "$WORK/model-$seed" > "$WORK/ours-$seed.json"
  if [ "$TUNE" -gt 0 ]; then
    log "seed $seed: infermesh train fraud --tune $TUNE"
    rm -rf "$WORK/tuned-$seed"
    "$BIN" train fraud --quiet --json --data "$WORK/table-$seed.csv" --label Class \
      --split-column split --threads "$THREADS" --seed 42 --tune "$TUNE" \
      --out "$WORK/tuned-$seed" > "$WORK/tuned-$seed.json"
  fi
done

python3 - "$WORK" "$SEEDS" "$TUNE" <<'PY'
import json, os, statistics as st, sys
work, seeds, tune = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
peer = [json.load(open(f"{work}/peer-{s}.json")) for s in seeds]
ours = [json.load(open(f"{work}/ours-{s}.json")) for s in seeds]
tuned = [json.load(open(f"{work}/tuned-{s}.json")) for s in seeds] if tune > 0 else []
med = lambda xs: st.median(xs)
rows = [
    ("test PR-AUC", med([o["test"]["pr_auc"] for o in ours]),
     {"xgboost": med([p["xgboost_pr_auc"] for p in peer]),
      "lightgbm": med([p["lightgbm_pr_auc"] for p in peer]),
      "lightgbm (same early stopping)": med([p["lightgbm_es_pr_auc"] for p in peer])}),
    ("test ROC-AUC", med([o["test"]["roc_auc"] for o in ours]),
     {"xgboost": med([p["xgboost_roc_auc"] for p in peer]),
      "lightgbm": med([p["lightgbm_roc_auc"] for p in peer])}),
    ("fit seconds", med([o["fit_seconds"] for o in ours]),
     {"lightgbm (same early stopping)": med([p["lightgbm_es_fit_seconds"] for p in peer]),
      "lightgbm 200 rounds": med([p["lightgbm_fit_seconds"] for p in peer]),
      "xgboost 200 rounds": med([p["xgboost_fit_seconds"] for p in peer])}),
]
print(f"seeds {seeds}; rows {peer[0]['rows']}, positives {peer[0]['positives']}")
if tuned:
    rows.append((f"test PR-AUC, --tune {tune}", med([o["test"]["pr_auc"] for o in tuned]),
                 {"xgboost": med([p["xgboost_pr_auc"] for p in peer]),
                  "lightgbm": med([p["lightgbm_pr_auc"] for p in peer])}))
    rows.append((f"seconds, --tune {tune} (all trials + refit)", med([o["fit_seconds"] for o in tuned]),
                 {"lightgbm (same early stopping)": med([p["lightgbm_es_fit_seconds"] for p in peer])}))
for name, o, peers in rows:
    print(f"{name}: infermesh {o:.4f}; " + "; ".join(f"{k} {v:.4f} (ratio {o / v:.3f})" for k, v in peers.items()))
print("per seed:", json.dumps({"ours": [{k: o[k] for k in ("best_iteration", "fit_seconds", "test")} for o in ours],
                               "tuned": [{k: o[k] for k in ("best_iteration", "fit_seconds", "test")} for o in tuned],
                               "peer": peer}))
PY
