"""`infermesh drift --json` against Evidently 0.7.23 itself on fresh random tables.

Each run draws new tables (the seed is printed; DRIFT_SEED=... replays one): mixed columns
(continuous, rounded, few-valued floats and integers, strings, booleans, gaps), references
on both sides of Evidently's 1,000-row switch, current tables above 10,000 rows now and then
(K-S's asymptotic p-value), CSV or Parquet, default or requested tests. Both sides must give
the same column types, tests, thresholds and decisions, scores within 1e-6, and the same
dataset drift. INFERMESH_BIN is the binary under test.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
from drift_evidently import evidently_report  # noqa: E402

BIN = os.environ.get("INFERMESH_BIN", "target/debug/infermesh")
SEED = int(os.environ.get("DRIFT_SEED", time.time_ns() % (1 << 31)))
CASES = int(os.environ.get("DRIFT_CASES", "12"))


def column(rng, kind, n, shift):
    if kind == "normal":
        return rng.normal(shift, 1.0 + shift / 2, n)
    if kind == "rounded":
        return np.round(rng.lognormal(2.0 + shift, 0.8, n), 1)
    if kind == "few_floats":
        return rng.choice([0.5, 1.5, 2.5, 3.5][: rng.integers(2, 5)], n)
    if kind == "small_ints":
        return rng.integers(0, int(rng.integers(2, 13)), n)
    if kind == "wide_ints":
        return rng.integers(0, 40 + int(10 * shift), n)
    if kind == "strings":
        levels = ["a", "b", "c", "d", "e", "f"][: rng.integers(2, 7)]
        p = rng.dirichlet(np.ones(len(levels)) * (1 + 10 * (1 - shift)))
        return rng.choice(levels, n, p=p)
    if kind == "bools":
        return rng.random(n) < 0.3 + shift / 4
    if kind == "gaps":
        v = rng.normal(shift, 1.0, n)
        v[rng.random(n) < 0.2] = np.nan
        return v
    raise ValueError(kind)


KINDS = ["normal", "rounded", "few_floats", "small_ints", "wide_ints", "strings", "bools", "gaps"]


def tables(rng):
    n_ref = int(rng.choice([rng.integers(30, 1001), rng.integers(1001, 2500)]))
    n_cur = int(rng.integers(10_001, 10_400)) if rng.random() < 0.15 else int(rng.integers(30, 2500))
    kinds = [KINDS[i] for i in rng.integers(0, len(KINDS), 6)]
    shifts = rng.choice([0.0, 0.05, 0.3, 1.0], len(kinds))
    ref = pd.DataFrame({f"c{i}_{k}": column(rng, k, n_ref, 0.0) for i, k in enumerate(kinds)})
    cur = pd.DataFrame({f"c{i}_{k}": column(rng, k, n_cur, s) for i, (k, s) in enumerate(zip(kinds, shifts))})
    return ref, cur


def options(rng):
    pick = rng.integers(0, 5)
    if pick == 0:
        return {"method": "psi"}
    if pick == 1:
        return {"num_method": "jensenshannon", "threshold": 0.05}
    if pick == 2:
        return {"drift_share": 0.3}
    return {}


def infermesh(ref_path, cur_path, opts):
    cmd = [BIN, "drift", "--reference", ref_path, "--current", cur_path, "--json"]
    for key, flag in (("method", "--method"), ("num_method", "--num-method"), ("cat_method", "--cat-method")):
        if key in opts:
            cmd += [flag, opts[key]]
    if "threshold" in opts:
        cmd += ["--threshold", str(opts["threshold"])]
    if "drift_share" in opts:
        cmd += ["--drift-share", str(opts["drift_share"])]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("case", range(CASES))
def test_random_tables_match_evidently(case, tmp_path):
    rng = np.random.default_rng([SEED, case])
    print(f"DRIFT_SEED={SEED} case {case}")
    ref, cur = tables(rng)
    opts = options(rng)
    ext = "parquet" if rng.random() < 0.4 else "csv"
    ref_path, cur_path = str(tmp_path / f"reference.{ext}"), str(tmp_path / f"current.{ext}")
    for table, path in ((ref, ref_path), (cur, cur_path)):
        table.to_parquet(path, index=False) if ext == "parquet" else table.to_csv(path, index=False)
    # Both sides read the files, as a user's tables would be read.
    read = pd.read_parquet if ext == "parquet" else pd.read_csv
    theirs = evidently_report(read(ref_path), read(cur_path), opts)
    ours = infermesh(ref_path, cur_path, opts)
    context = f"DRIFT_SEED={SEED} case {case} ({ext}, {len(ref)} / {len(cur)} rows, {opts})"
    assert [s["column"] for s in ours["skipped_columns"]] == theirs["skipped_columns"], context
    assert set(ours["columns"]) == set(theirs["columns"]), context
    for name, t in theirs["columns"].items():
        o = ours["columns"][name]
        for key in ("column_type", "stattest", "threshold", "drift_detected"):
            assert o[key] == t[key], f"{context}: {name}.{key}: {o[key]} against {t[key]}"
        assert abs(o["drift_score"] - t["drift_score"]) <= 1e-6, (
            f"{context}: {name}: {o['drift_score']} against Evidently's {t['drift_score']}"
        )
    for key in ("dataset_drift", "number_of_drifted_columns", "number_of_columns"):
        assert ours[key] == theirs[key], f"{context}: {key}"
    assert abs(ours["share_of_drifted_columns"] - theirs["share_of_drifted_columns"]) < 1e-12, context
