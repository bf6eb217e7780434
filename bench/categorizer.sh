#!/usr/bin/env bash
# Text categoriser on real bank-statement lines, side by side over several splits: the issue's
# peer, TF-IDF (char_wb 2-5 grams + word unigrams) + scikit-learn LogisticRegression(C=10)
# (bench/categorizer_peer.py, which spells out the pipeline), against `infermesh train
# categorizer` with its default flags (all-MiniLM-L6-v2 fine-tuned on candle, CPU, blended with
# its lexical head; see `infermesh train categorizer --help`), then `infermesh eval categorizer`.
# Data: $INFERMESH_DATA/bank-transaction-categories/za_bank_statement_transactions.csv
# (description -> label, 451 rows, 44 labels; see its PROVENANCE.md). Per split seed: labels with
# fewer than 5 rows dropped (405 rows, 24 labels left), then scikit-learn's stratified
# train_test_split(test_size=0.25, random_state=seed), written under the cache, never the repo.
# SEEDS (default "0 1 2 3 4") lists the split seeds. Per seed it prints both accuracies and
# macro-F1s and a paired comparison of the two models' predictions on the same test rows
# (bootstrap interval of the macro-F1 difference, McNemar's test); then the mean and median of
# each over the seeds. CATEGORIZER_FLAGS adds flags to `infermesh train` (none by default: the
# defaults are what is measured). INFERMESH_BIN uses that infermesh binary instead of building
# the workspace. CATEGORIZER_DATA=kaggle runs the same comparison on the directory's other
# labelled file, kaggle_personal_finance_transactions.csv (Description -> Category, 808 rows).
# CATEGORIZER_DATA=sentiment (what bench/sentiment.sh runs) takes the UCI sentiment-labelled
# sentences instead ($INFERMESH_DATA/sentiment-labelled-sentences: amazon, yelp and imdb,
# 3,000 sentences, labels 0/1 written as negative/positive) and trains with `infermesh train
# sentiment`.
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
DATA_ROOT="${INFERMESH_DATA:-$ROOT/../shared/data}"
JOB=categorizer
case "${CATEGORIZER_DATA:-za}" in
  za) DATA="$DATA_ROOT/bank-transaction-categories/za_bank_statement_transactions.csv"
      COLUMNS=(description label) TAG= ;;
  kaggle) DATA="$DATA_ROOT/bank-transaction-categories/kaggle_personal_finance_transactions.csv"
      COLUMNS=(Description Category) TAG=-kaggle ;;
  sentiment) DATA="$DATA_ROOT/sentiment-labelled-sentences" COLUMNS=(description label)
      TAG=-sentiment JOB=sentiment ;;
  *) echo "CATEGORIZER_DATA is za, kaggle or sentiment" >&2; exit 2 ;;
esac
BASE="${CATEGORIZER_BASE:-$CACHE/models/all-MiniLM-L6-v2}"
SEEDS=${SEEDS:-0 1 2 3 4}
WORK="$CACHE/bench-categorizer$TAG"
[ -e "$DATA" ] || { echo "missing $DATA" >&2; exit 1; }
[ -f "$BASE/model.safetensors" ] || { echo "missing $BASE (run scripts/test.sh once to fetch it)" >&2; exit 1; }

ensure_venv venv-categorizer-peer bench/requirements-categorizer-peer.txt 'import sklearn'
PY="$CACHE/venv-categorizer-peer/bin/python"
mkdir -p "$WORK"
if [ "$JOB" = sentiment ]; then
  # One CSV of the three files, parsed as their PROVENANCE.md says (split on LF, then on the
  # last tab; never splitlines(), which breaks imdb's U+0085 characters).
  "$PY" - "$DATA" "$WORK/sentences.csv" <<'PY'
import csv, sys
src, out = sys.argv[1], sys.argv[2]
rows = []
for name in ("amazon_cells", "yelp", "imdb"):
    with open(f"{src}/{name}_labelled.txt", encoding="utf-8", newline="") as f:
        for line in f.read().split("\n"):
            if line.strip():
                text, label = line.rsplit("\t", 1)
                rows.append((text.strip(), {"0": "negative", "1": "positive"}[label.strip()]))
with open(out, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["description", "label"])
    w.writerows(rows)
PY
  DATA="$WORK/sentences.csv"
fi

if [ -n "${INFERMESH_BIN:-}" ]; then
  BIN="$INFERMESH_BIN"
else
  # One release build of the whole workspace (same feature set for every bench script).
  cargo build --release --locked --workspace --bins --examples >&2
  BIN="$CARGO_TARGET_DIR/release/infermesh"
fi

RESULTS="$WORK/results.jsonl"
: > "$RESULTS"
for SEED in $SEEDS; do
  DIR="$WORK/seed$SEED"
  rm -rf "$DIR/model"
  mkdir -p "$DIR"
  log "split seed $SEED: peer (TF-IDF + logistic regression)"
  SPLIT=$("$PY" bench/categorizer_peer.py split "$DATA" "$DIR" "$SEED" "${COLUMNS[@]}")
  PEER=$("$PY" bench/categorizer_peer.py baseline "$DIR" "$DIR/predictions_peer.csv" | tail -n 1)
  log "split seed $SEED: infermesh train $JOB ${CATEGORIZER_FLAGS:-(defaults)}"
  # shellcheck disable=SC2086
  "$BIN" train "$JOB" --data "$DIR/train.csv" --text-column description --label-column label \
    --base "$BASE" --out "$DIR/model" ${CATEGORIZER_FLAGS:-} >&2
  OURS=$("$BIN" eval "$JOB" --data "$DIR/test.csv" --text-column description \
    --label-column label --model "$DIR/model" --json --predictions "$DIR/predictions_ours.csv")
  PAIRED=$("$PY" bench/categorizer_peer.py compare "$DIR/predictions_ours.csv" "$DIR/predictions_peer.csv")
  "$PY" - "$SEED" "$SPLIT" "$PEER" "$OURS" "$DIR/model/training_report.json" "$PAIRED" \
    >> "$RESULTS" <<'PY'
import json, sys
seed = int(sys.argv[1])
split, peer, ours = (json.loads(a) for a in sys.argv[2:5])
report = json.load(open(sys.argv[5]))
paired = json.loads(sys.argv[6])
print(json.dumps({"seed": seed, "split": split, "peer": peer,
                  "infermesh": {"accuracy": ours["accuracy"], "macro_f1": ours["macro_f1"],
                                "n": ours["n"], "train_seconds": report["elapsed_seconds"],
                                "epochs_run": report["epochs_run"],
                                "best_epoch": report["best_epoch"]},
                  "macro_f1_delta": ours["macro_f1"] - peer["macro_f1"],
                  "paired": {"bootstrap": paired["bootstrap"], "mcnemar": paired["mcnemar"]}}))
PY
  tail -n 1 "$RESULTS"
done

"$PY" - "$RESULTS" <<'PY'
import json, statistics as st, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'seed':>4} {'test':>5} | {'peer F1':>8} {'acc':>7} | {'ours F1':>8} {'acc':>7} | "
      f"{'delta F1':>8} {'boot 95% interval':>18} {'ahead':>6} {'only o/p':>8} {'McNemar p':>9}")
for r in runs:
    b, m = r["paired"]["bootstrap"], r["paired"]["mcnemar"]
    lo, hi = b["delta_ci95"]
    print(f"{r['seed']:>4} {r['infermesh']['n']:>5} | {r['peer']['macro_f1']:>8.4f} "
          f"{r['peer']['accuracy']:>7.4f} | {r['infermesh']['macro_f1']:>8.4f} "
          f"{r['infermesh']['accuracy']:>7.4f} | {r['macro_f1_delta']:>+8.4f} "
          f"{f'[{lo:+.3f}, {hi:+.3f}]':>18} {b['share_ours_ahead']:>6.0%} "
          f"{str(m['only_ours_right']) + '/' + str(m['only_peer_right']):>8} {m['p_value_exact']:>9.3f}")
summary = {"seeds": [r["seed"] for r in runs]}
for side in ("peer", "infermesh"):
    for metric in ("macro_f1", "accuracy"):
        xs = [r[side][metric] for r in runs]
        summary[f"{side}_{metric}"] = {"mean": st.mean(xs), "median": st.median(xs)}
deltas = [r["macro_f1_delta"] for r in runs]
summary["macro_f1_delta"] = {
    "mean": st.mean(deltas), "median": st.median(deltas),
    "standard_error": st.stdev(deltas) / len(deltas) ** 0.5 if len(deltas) > 1 else None,
    "seeds_ahead": sum(d > 0 for d in deltas), "seeds_behind": sum(d < 0 for d in deltas)}
for name in ("mean", "median"):
    print(f"{name:>10} | {summary['peer_macro_f1'][name]:>8.4f} {summary['peer_accuracy'][name]:>7.4f}"
          f" | {summary['infermesh_macro_f1'][name]:>8.4f} {summary['infermesh_accuracy'][name]:>7.4f}"
          f" | {summary['macro_f1_delta'][name]:>+8.4f}")
print(json.dumps(summary))
PY
