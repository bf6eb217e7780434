"""The ULB credit-card table the fraud and anomaly benchmarks share, as its PROVENANCE.md
suggests: every fraud of creditcard_all_frauds_plus_first4000_normal.csv plus the normal rows
of the uniform random sample creditcard_random5000.csv, Time dropped, exact duplicates
removed, and a stratified 70/15/15 split by seed written as a `split` column that every side
uses. `python bench/creditcard_table.py DATA_DIR OUT.csv SEED` (OUT under the cache, never in
the repository: the data's licence forbids copies)."""

import sys

import numpy as np
import pandas as pd

data, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
a = pd.read_csv(f"{data}/creditcard_all_frauds_plus_first4000_normal.csv")
b = pd.read_csv(f"{data}/creditcard_random5000.csv")
df = pd.concat([a[a.Class == 1], b[b.Class == 0]]).drop(columns=["Time"])
df = df.drop_duplicates().reset_index(drop=True)
rng = np.random.default_rng(seed)
split = np.empty(len(df), dtype=object)
for c in (0, 1):
    idx = rng.permutation(np.flatnonzero(df.Class.to_numpy() == c))
    n_test, n_valid = round(len(idx) * 0.15), round(len(idx) * 0.15)
    split[idx[:n_test]] = "test"
    split[idx[n_test:n_test + n_valid]] = "valid"
    split[idx[n_test + n_valid:]] = "train"
df["split"] = split
df.to_csv(out, index=False)
