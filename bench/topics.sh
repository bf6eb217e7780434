#!/usr/bin/env bash
# Topic model quality and fit time, side by side with BERTopic 0.17 (bench/topics_peer.py, which
# spells out its pipeline) on the same all-MiniLM-L6-v2 embeddings: infermesh embeds each corpus
# once (`infermesh train topics --save-embeddings`) and both sides fit on that .npy (infermesh
# with --embeddings, BERTopic with fit_transform(docs, embeddings)), so the fit time is the topic
# model's alone on both sides. Same parameters as BERTopic's defaults: min_topic_size 10, UMAP
# n_neighbors 15, n_components 5, min_dist 0, cosine; HDBSCAN min_cluster_size 10 (min_samples
# the same), eom; no topic merging or outlier reduction. Per seed in SEEDS (default "42 1 2") one
# fit on each side with that UMAP seed; then DEFAULT_RUNS (default 3) fits of plain
# `BERTopic(min_topic_size=10)`, whose unseeded UMAP takes umap-learn's parallel path (seeded
# umap-learn is single-threaded), so the peer's time is also measured on its fastest default.
# Both sides' per-row training topics are scored by one scorer (`topics_peer.py score`:
# scikit-learn NMI and ARI against the labels, outliers -1 counted as one more cluster on both
# sides, and the outlier share). Fit seconds: infermesh's training_report.json `fit_seconds`
# (TopicModel::fit: UMAP, HDBSCAN, c-TF-IDF keywords), BERTopic's `fit_transform` call, after
# one untimed fit that compiles umap-learn's numba code (its time is printed).
# Then transform after reload: `infermesh eval topics` twice (two loads of the saved version) on
# the same embeddings must write byte-identical per-row topics and probabilities; BERTopic's
# transform before save and after pickle / safetensors save + load is compared (RELOAD=0 skips).
# Data: $INFERMESH_DATA (default ../shared/data) bbc-news/bbc/<class>/*.txt (2,225 articles, 5
# classes) and ag-news-test/test.csv (7,600, 4 classes), converted to CSV in a temp dir at run
# time (their licences forbid copies in the repo) and removed on exit; the embeddings are cached
# as $CACHE/bench-topics/<corpus>-<sha of the CSV>.npy. DATASETS (default "bbc ag") picks them.
# INFERMESH_BIN uses that infermesh binary instead of building the workspace.
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
DATA_ROOT="${INFERMESH_DATA:-$ROOT/../shared/data}"
EMBEDDER="${TOPICS_EMBEDDER:-$CACHE/models/all-MiniLM-L6-v2}"
SEEDS=${SEEDS:-42 1 2}
DEFAULT_RUNS=${DEFAULT_RUNS:-3}
DATASETS=${DATASETS:-bbc ag}
RELOAD=${RELOAD:-1}
KEEP="$CACHE/bench-topics"
[ -f "$EMBEDDER/model.safetensors" ] || { echo "missing $EMBEDDER (run scripts/test.sh once to fetch it)" >&2; exit 1; }

ensure_venv venv-topics-peer bench/requirements-topics-peer.txt 'import umap, hdbscan, safetensors'
PY="$CACHE/venv-topics-peer/bin/python"
if ! (cd / && "$PY" -c 'import bertopic') 2>/dev/null; then
  # bertopic requires sentence-transformers (and so torch, several GB); with precomputed
  # embeddings it never imports it, so it goes in without its dependencies.
  log "installing bertopic 0.17.4 into venv-topics-peer (--no-deps)"
  "$CACHE/venv-topics-peer/bin/pip" install -q --no-deps bertopic==0.17.4
fi

if [ -n "${INFERMESH_BIN:-}" ]; then
  BIN="$INFERMESH_BIN"
else
  # One release build of the whole workspace (same feature set for every bench script).
  cargo build --release --locked --workspace --bins --examples >&2
  BIN="$CARGO_TARGET_DIR/release/infermesh"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/infermesh-bench-topics.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$KEEP"
RESULTS="$KEEP/results.jsonl"
: > "$RESULTS"
"$PY" bench/topics_peer.py convert "$DATA_ROOT" "$WORK" >&2
record() { printf '%s\n' "$1" >> "$RESULTS"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
PARAMS=(--text-column text --embedder "$EMBEDDER" --min-topic-size 10 --n-neighbors 15 --n-components 5)

for ds in $DATASETS; do
  CSV="$WORK/$ds.csv"
  D="$WORK/$ds"
  mkdir -p "$D"
  NPY="$KEEP/$ds-$(sha256sum "$CSV" | cut -c1-16).npy"
  if [ ! -f "$NPY" ]; then
    log "$ds: embedding once with $EMBEDDER (infermesh train topics --save-embeddings)"
    "$BIN" train topics --data "$CSV" "${PARAMS[@]}" --out "$D/embed" --save-embeddings "$NPY.tmp" >&2
    mv "$NPY.tmp" "$NPY"
    rm -rf "$D/embed"
  fi
  for seed in $SEEDS; do
    log "$ds seed $seed: infermesh train topics --embeddings (load $(load))"
    "$BIN" train topics --data "$CSV" "${PARAMS[@]}" --embeddings "$NPY" --seed "$seed" \
      --out "$D/ours-$seed" --assignments "$D/ours-$seed.csv" >&2
    fit=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["fit_seconds"])' \
      "$D/ours-$seed/training_report.json")
    score=$("$PY" bench/topics_peer.py score "$CSV" "$D/ours-$seed.csv")
    record "{\"dataset\": \"$ds\", \"side\": \"infermesh\", \"run\": \"seed $seed\", \"fit_seconds\": $fit, \"score\": $score, \"load\": \"$(load)\"}"
  done
  log "$ds: BERTopic, seeds $SEEDS, then $DEFAULT_RUNS default (unseeded) fits (load $(load))"
  "$PY" bench/topics_peer.py fit "$CSV" "$NPY" "$D" "$SEEDS" "$DEFAULT_RUNS" > "$D/peer.jsonl"
  grep jit_warmup "$D/peer.jsonl" >&2
  while read -r line; do
    run=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["run"])' "$line")
    fit=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["fit_seconds"])' "$line")
    score=$("$PY" bench/topics_peer.py score "$CSV" "$D/$run.csv")
    side=bertopic; case "$run" in peer-default-*) side=bertopic-default ;; esac
    record "{\"dataset\": \"$ds\", \"side\": \"$side\", \"run\": \"$run\", \"fit_seconds\": $fit, \"score\": $score, \"load\": \"$(load)\"}"
  done < <(grep '"run"' "$D/peer.jsonl")

  if [ "$RELOAD" = 1 ]; then
    first=${SEEDS%% *}
    log "$ds: transform after reload (infermesh eval topics twice on version seed $first; BERTopic save/load)"
    for i in 1 2; do
      "$BIN" eval topics --model "$D/ours-$first" --data "$CSV" --text-column text --label-column label \
        --embeddings "$NPY" --assignments "$D/transform-$i.csv" --json > "$D/eval-$i.json"
    done
    same=false; cmp -s "$D/transform-1.csv" "$D/transform-2.csv" && same=true
    ours_eval=$(tr -d '\n' < "$D/eval-1.json")
    peer=$("$PY" bench/topics_peer.py reload "$CSV" "$NPY" "$first" 2>/dev/null | tail -n 1)
    record "{\"dataset\": \"$ds\", \"side\": \"reload\", \"infermesh_transform_identical\": $same, \"infermesh_transform_eval\": $ours_eval, \"bertopic\": $peer}"
  fi
done

"$PY" - "$RESULTS" <<'PY'
import json, statistics as st, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
med = lambda xs: st.median(xs) if xs else float("nan")
for ds in dict.fromkeys(r["dataset"] for r in rows):
    print(f"\n== {ds}")
    print(f"{'side':18} {'run':16} {'NMI':>7} {'ARI':>7} {'outliers':>8} {'topics':>6} {'fit s':>8}  load")
    sides = {}
    for r in rows:
        if r["dataset"] != ds or r["side"] == "reload":
            continue
        s = r["score"]
        sides.setdefault(r["side"], []).append(r)
        print(f"{r['side']:18} {r['run']:16} {s['nmi']:>7.4f} {s['ari']:>7.4f} {s['outlier_share']:>8.3f} "
              f"{s['topics']:>6} {r['fit_seconds']:>8.3f}  {r['load']}")
    m = {side: {k: med([r["score"][k] for r in rs]) for k in ("nmi", "ari", "outlier_share", "topics")}
         | {"fit_seconds": med([r["fit_seconds"] for r in rs])} for side, rs in sides.items()}
    for side, v in m.items():
        print(f"{side + ' median':35} {v['nmi']:>7.4f} {v['ari']:>7.4f} {v['outlier_share']:>8.3f} "
              f"{v['topics']:>6} {v['fit_seconds']:>8.3f}")
    ours = m.get("infermesh")
    for peer in ("bertopic", "bertopic-default"):
        if ours and peer in m:
            p = m[peer]
            print(f"ratio vs {peer}: NMI {ours['nmi'] / p['nmi']:.3f}, ARI {ours['ari'] / p['ari']:.3f}, "
                  f"fit {p['fit_seconds'] / ours['fit_seconds']:.1f}x faster")
    for r in rows:
        if r["dataset"] == ds and r["side"] == "reload":
            print("transform after reload:", json.dumps({k: v for k, v in r.items() if k not in ("dataset", "side")}))
print(json.dumps(rows))
PY
