"""Drift benchmark driver for bench/drift.sh: `infermesh drift` against Evidently 0.7.23's
DataDriftPreset on the same two tables, side by side in one run.

`make OUT_DIR ROWS COLS SEED`: writes OUT_DIR/reference.parquet and OUT_DIR/current.parquet
(and .csv twins): ROWS rows each, COLS mixed columns in a fixed rotation (normal floats,
rounded lognormal amounts, few-valued floats, small integers, wide integers, strings), the
current table shifted in every third column. Seeded NumPy draws.

`run OUT_DIR BIN ROUNDS FORMAT`: per round, in a fresh process each, Evidently (read both
tables with pandas, `Report([DataDriftPreset()]).run(current, reference)`; text columns would
be excluded on both sides, there are none here) and `infermesh drift --json` on the same files;
wall seconds and peak RSS (the child's `ru_maxrss`). Checks every column's test, threshold,
decision and score (within 1e-6) and the dataset drift against Evidently's, then prints one
JSON line with the medians.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def make(out, rows, cols, seed):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)

    def column(i, shift, n):
        kind = i % 6
        if kind == 0:
            return rng.normal(shift, 1.0, n)
        if kind == 1:
            return np.round(rng.lognormal(3.0 + shift, 1.0, n), 2)
        if kind == 2:
            return rng.choice([0.5, 1.5, 2.5, 3.5], n, p=[0.1, 0.2, 0.3, 0.4] if shift == 0 else [0.4, 0.3, 0.2, 0.1])
        if kind == 3:
            return rng.integers(0, 8, n)
        if kind == 4:
            return rng.integers(0, 1000 + int(200 * shift), n)
        levels = np.array([f"level_{j}" for j in range(12)])
        p = np.linspace(1.0, 2.0 + shift, 12)
        return rng.choice(levels, n, p=p / p.sum())

    for name, shifted in (("reference", False), ("current", True)):
        table = pd.DataFrame(
            {f"c{i:02d}": column(i, 0.3 if shifted and i % 3 == 0 else 0.0, rows) for i in range(cols)}
        )
        table.to_parquet(os.path.join(out, f"{name}.parquet"), index=False)
        table.to_csv(os.path.join(out, f"{name}.csv"), index=False)


EVIDENTLY_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import pandas as pd
sys.path.insert(0, sys.argv[4])
from drift_evidently import evidently_report
read = pd.read_parquet if sys.argv[3] == "parquet" else pd.read_csv
t1 = time.perf_counter()
result = evidently_report(read(sys.argv[1]), read(sys.argv[2]))
t2 = time.perf_counter()
print(json.dumps({"result": result, "import_seconds": t1 - t0, "seconds": t2 - t1}))
"""


def measure(cmd):
    """Runs cmd in a fresh helper process and returns (stdout, wall, peak RSS MiB) of cmd."""
    helper = (
        "import os, resource, subprocess, sys, time, json\n"
        "t0 = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t0\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0\n"
        "sys.stderr.write(p.stderr)\n"
        "print(json.dumps({'rc': p.returncode, 'wall': wall, 'rss_mb': rss, 'out': p.stdout}))\n"
    )
    done = subprocess.run([sys.executable, "-c", helper, *cmd], capture_output=True, text=True)
    info = json.loads(done.stdout)
    if info["rc"] != 0:
        sys.exit(f"{cmd[0]} failed: {done.stderr[-2000:]}")
    return info["out"], info["wall"], info["rss_mb"]


def compare(ours, theirs):
    assert set(ours["columns"]) == set(theirs["columns"]), "columns"
    worst = 0.0
    for name, t in theirs["columns"].items():
        o = ours["columns"][name]
        for key in ("column_type", "stattest", "threshold", "drift_detected"):
            assert o[key] == t[key], f"{name}.{key}: {o[key]} against {t[key]}"
        worst = max(worst, abs(o["drift_score"] - t["drift_score"]))
    assert worst <= 1e-6, f"largest score difference {worst}"
    for key in ("dataset_drift", "number_of_drifted_columns"):
        assert ours[key] == theirs[key], key
    return worst


def run(out, binary, rounds, fmt):
    ref, cur = (os.path.join(out, f"{n}.{fmt}") for n in ("reference", "current"))
    ours_t, ours_rss, theirs_t, theirs_wall, theirs_rss, worst = [], [], [], [], [], 0.0
    tests = {}
    for r in range(rounds):
        text, wall, rss = measure([binary, "drift", "--reference", ref, "--current", cur, "--json"])
        ours = json.loads(text)
        ours_t.append(wall)
        ours_rss.append(rss)
        text, wall, rss = measure([sys.executable, "-c", EVIDENTLY_CHILD, ref, cur, fmt, os.path.join(HERE, "..", "tools")])
        peer = json.loads(text)
        theirs_t.append(peer["seconds"])
        theirs_wall.append(wall)
        theirs_rss.append(rss)
        worst = max(worst, compare(ours, peer["result"]))
        for c in ours["columns"].values():
            tests[c["stattest"]] = tests.get(c["stattest"], 0) + 1
        print(f"round {r + 1}: infermesh {ours_t[-1]:.3f} s, Evidently {theirs_t[-1]:.3f} s (process {wall:.3f} s)", file=sys.stderr)
    med = statistics.median
    print(json.dumps({
        "format": fmt,
        "rounds": rounds,
        "columns_tested": ours["number_of_columns"],
        "tests": {k: v // rounds for k, v in tests.items()},
        "drifted": ours["number_of_drifted_columns"],
        "largest_score_difference": worst,
        "infermesh_seconds": med(ours_t),
        "infermesh_peak_rss_mb": med(ours_rss),
        "evidently_seconds": med(theirs_t),
        "evidently_process_seconds": med(theirs_wall),
        "evidently_peak_rss_mb": med(theirs_rss),
        "ratio": med(theirs_t) / med(ours_t),
        "ratio_process": med(theirs_wall) / med(ours_t),
    }))


if __name__ == "__main__":
    if sys.argv[1:2] == ["make"]:
        make(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1:2] == ["run"]:
        run(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        sys.exit(__doc__)
