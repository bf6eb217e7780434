#!/usr/bin/env bash
# Data drift, side by side with Evidently 0.7.23 (bench/drift_peer.py): ROWS (default 100,000)
# rows by COLS (default 50) mixed columns in a reference and a current table (Parquet, or CSV
# with FORMAT=csv), made once from seeded draws in a temp dir; ROUNDS (default 3) rounds, each
# side in a fresh process per round: `infermesh drift --json` (whole process: start, read both
# tables, every test, JSON out) against Evidently's DataDriftPreset (pandas reads both tables,
# `Report.run`; its Python imports timed apart). Every column's test, threshold, decision and
# score (within 1e-6) must match Evidently's. Medians of wall seconds and peak RSS.
# INFERMESH_BIN uses that binary instead of building the release binary.
source "$(dirname "$0")/../scripts/common.sh"
cd "$ROOT"
ROWS=${ROWS:-100000}
COLS=${COLS:-50}
ROUNDS=${ROUNDS:-3}
FORMAT=${FORMAT:-parquet}
ensure_venv venv-drift tests/drift/requirements.txt 'import evidently, pandas, pyarrow, pytest'
PY="$CACHE/venv-drift/bin/python"
if [ -n "${INFERMESH_BIN:-}" ]; then
  BIN="$INFERMESH_BIN"
else
  cargo build --release --locked -p infermesh --bin infermesh >&2
  BIN="$CARGO_TARGET_DIR/release/infermesh"
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/infermesh-bench-drift.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
log "making $ROWS x $COLS tables"
"$PY" bench/drift_peer.py make "$WORK" "$ROWS" "$COLS" 7
log "infermesh drift against Evidently, $ROUNDS rounds ($FORMAT; load $(cut -d' ' -f1-3 /proc/loadavg))"
"$PY" -W ignore bench/drift_peer.py run "$WORK" "$BIN" "$ROUNDS" "$FORMAT"
