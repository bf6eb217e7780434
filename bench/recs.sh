#!/usr/bin/env bash
# Recommender fit time and accuracy, side by side with LightFM (bench/recs_peer.py) on
# MovieLens 100k with LightFM's split (ua.base / ua.test), ratings >= 4 as positives, WARP,
# the same components, epochs and threads, over several seeds. Both catalogues hold every id of
# both files (LightFM's matrix is shaped by them; ours gets them with --catalog). Data:
# $INFERMESH_DATA/movielens-100k (see its PROVENANCE.md); nothing is copied into the repo.
# Env: COMPONENTS (default 10), EPOCHS (10), THREADS (2), SEEDS ("1 2 ... 40"). Hogwild runs are
# not repeatable draw for draw (in either), and one seed moves precision@10 by +-0.004, so
# compare means over the seeds (their standard error is printed).
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
DATA="${INFERMESH_DATA:-$ROOT/../shared/data}/movielens-100k"
COMPONENTS=${COMPONENTS:-10}
EPOCHS=${EPOCHS:-10}
THREADS=${THREADS:-2}
SEEDS=${SEEDS:-$(seq -s " " 1 40)}
WORK="$CACHE/bench-recs"
mkdir -p "$WORK"
[ -f "$DATA/ua.base" ] || { echo "missing $DATA/ua.base" >&2; exit 1; }

ensure_venv venv-recs-peer bench/requirements-recs-peer.txt 'import numpy, scipy'
PY="$CACHE/venv-recs-peer/bin/python"
# LightFM 1.17 is an sdist whose setup.py sets `__builtins__.__LIGHTFM_SETUP__`, which fails
# under today's pip/setuptools (setup.py runs with `__builtins__` as a dict): fetch the sdist,
# check its hash, set the flag through `builtins` instead, build without isolation.
LIGHTFM_URL=https://files.pythonhosted.org/packages/1f/96/5ec230f5c27811534af0faaa8525f11c1000ee1c24c8a82c0546d0724aea/lightfm-1.17.tar.gz
LIGHTFM_SHA256=2b77ada182ccd768a8d7643ab3cfcd8b6e855db09087f7cc7329bd63316697a8
if ! (cd / && "$PY" -c 'import lightfm._lightfm_fast_openmp') 2>/dev/null; then
  log "installing LightFM 1.17 into venv-recs-peer (builds from source, once)"
  src="$CACHE/src/lightfm"
  rm -rf "$src" && mkdir -p "$src"
  curl -sSfL -o "$src/lightfm-1.17.tar.gz" "$LIGHTFM_URL"
  echo "$LIGHTFM_SHA256  $src/lightfm-1.17.tar.gz" | sha256sum -c --quiet
  tar xzf "$src/lightfm-1.17.tar.gz" -C "$src"
  sed -i 's/^__builtins__.__LIGHTFM_SETUP__ = True/import builtins; builtins.__LIGHTFM_SETUP__ = True/' \
    "$src/lightfm-1.17/setup.py"
  "$CACHE/venv-recs-peer/bin/pip" install -q --no-build-isolation "$src/lightfm-1.17"
fi

log "release build"
cargo build --release --locked --workspace --bins --examples >&2
BIN="$CARGO_TARGET_DIR/release/infermesh"
COLS=(--separator tab --no-header --user-col column_1 --item-col column_2 --weight-col column_3 --min-weight 4)

for seed in $SEEDS; do
  log "seed $seed: LightFM"
  "$PY" bench/recs_peer.py "$DATA" "$COMPONENTS" "$EPOCHS" "$THREADS" "$seed" > "$WORK/peer-$seed.json"
  log "seed $seed: infermesh"
  start=$(date +%s.%N)
  "$BIN" train recs --interactions "$DATA/ua.base" "${COLS[@]}" --loss warp \
    --components "$COMPONENTS" --epochs "$EPOCHS" --threads "$THREADS" --seed "$seed" \
    --catalog "$DATA/ua.test" --out "$WORK/model-$seed" >&2
  end=$(date +%s.%N)
  "$BIN" eval recs --model "$WORK/model-$seed" --train "$DATA/ua.base" --test "$DATA/ua.test" \
    "${COLS[@]}" --k 10 --json > "$WORK/ours-$seed.json"
  python3 - "$WORK/model-$seed/recs.json" "$start" "$end" "$WORK/ours-$seed.json" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1]))
ours = json.load(open(sys.argv[4]))
ours["fit_seconds"] = meta["training"]["fit_seconds"]
ours["cli_seconds"] = float(sys.argv[3]) - float(sys.argv[2])
json.dump(ours, open(sys.argv[4], "w"))
PY
done

python3 - "$WORK" "$SEEDS" "$COMPONENTS" "$EPOCHS" "$THREADS" <<'PY'
import json, statistics as st, sys
work, seeds = sys.argv[1], sys.argv[2].split()
peer = [json.load(open(f"{work}/peer-{s}.json")) for s in seeds]
ours = [json.load(open(f"{work}/ours-{s}.json")) for s in seeds]
def col(rows, f):
    xs = [f(r) for r in rows]
    sem = st.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else 0.0
    return st.mean(xs), st.median(xs), sem, (min(xs), max(xs))
rows = [
    ("precision@10", lambda r: r["precision_at_10"], lambda r: r["metrics"]["precision_at_k"]),
    ("recall@10", lambda r: r["recall_at_10"], lambda r: r["metrics"]["recall_at_k"]),
    ("AUC", lambda r: r["auc"], lambda r: r["metrics"]["auc"]),
    ("fit seconds", lambda r: r["fit_seconds"], lambda r: r["fit_seconds"]),
]
print(f"MovieLens 100k ua split, ratings>=4, WARP, components {sys.argv[3]}, epochs {sys.argv[4]}, threads {sys.argv[5]}, seeds {seeds}")
print(f"{'':14}{'LightFM mean +- se (median)':>30}{'infermesh mean +- se (median)':>32}{'ratio':>8}")
for name, fp, fo in rows:
    (ap, mp, sp, rp), (ao, mo, so, ro) = col(peer, fp), col(ours, fo)
    print(f"{name:14}{ap:>12.4f} +- {sp:.4f} ({mp:.4f}){ao:>14.4f} +- {so:.4f} ({mo:.4f}){ao / ap:>8.3f}"
          f"   ranges LightFM {rp[0]:.4f}-{rp[1]:.4f}, infermesh {ro[0]:.4f}-{ro[1]:.4f}")
print("unknown test pairs (infermesh):", [o["unknown_test_pairs"] for o in ours])
print(json.dumps({"peer": peer, "infermesh": ours}))
PY
