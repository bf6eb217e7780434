"""Evidently 0.7's DataDriftPreset as the reference for `infermesh drift`.

Two uses:

* `python tools/drift_evidently.py fixtures OUT_DIR` writes the committed fixtures that
  `training/tests/drift.rs` checks `infermesh drift` against: per case a folder with
  `reference.csv` (or `.parquet`), `current.csv` (or `.parquet`) and `expected.json` (the
  options and Evidently's result in `infermesh drift --json`'s shape). The tables are made
  from seeded NumPy draws, so a rerun writes the same files.
* `python tools/drift_evidently.py report REFERENCE CURRENT [OPTIONS_JSON]` prints Evidently's
  result for two tables in that shape (used by `tests/drift/test_evidently_equal.py`).

Evidently's report gives each column's test, score and threshold (ValueDrift) and the count
and share of drifted columns (DriftedColumnsCount); a column's `drift_detected` is its test's
rule on the score (p-values: below the threshold, K-S at or below; distances at or above),
and the count of those must equal Evidently's count (checked here).

Needs the venv of tests/drift/requirements.txt (evidently 0.7.23, pandas < 3, pyarrow).
"""

import json
import os
import sys

import numpy as np
import pandas as pd
from evidently import Dataset, Report
from evidently.legacy.core import ColumnType
from evidently.presets import DataDriftPreset

# Evidently's display names (what ValueDrift's config carries) to its registered names.
NAMES = {
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "PSI": "psi",
}


def detected(test, score, threshold):
    if test == "ks":
        return bool(score <= threshold)
    if test in ("chisquare", "z"):
        return bool(score < threshold)
    return bool(score >= threshold)


def read(path):
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def evidently_report(reference, current, options=None):
    """Evidently's DataDriftPreset on two DataFrames, as `infermesh drift --json` prints it."""
    options = dict(options or {})
    definition = Dataset.from_pandas(current).data_definition
    # Text columns (Evidently: a domain classifier on the words) are not tested by infermesh
    # drift; both sides compare the numerical and categorical ones.
    skipped = [c for c in current.columns if definition.get_column_type(c) == ColumnType.Text]
    tested = options.get("columns") or [
        c for c in current.columns
        if definition.get_column_type(c) in (ColumnType.Numerical, ColumnType.Categorical)
    ]
    preset = DataDriftPreset(
        columns=tested,
        drift_share=options.get("drift_share", 0.5),
        method=options.get("method"),
        num_method=options.get("num_method"),
        cat_method=options.get("cat_method"),
        threshold=options.get("threshold"),
    )
    snapshot = Report([preset]).run(current, reference)
    columns = {}
    count = share = None
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":DriftedColumnsCount"):
            count, share = metric["value"]["count"], metric["value"]["share"]
            continue
        if not config["type"].endswith(":ValueDrift"):
            continue
        name = config["column"]
        test = NAMES.get(config["method"], config["method"])
        column_type = definition.get_column_type(name)
        score = float(metric["value"])
        columns[name] = {
            "column_type": {ColumnType.Numerical: "num", ColumnType.Categorical: "cat"}[column_type],
            "stattest": test,
            "drift_score": score,
            "threshold": float(config["threshold"]),
            "drift_detected": detected(test, score, float(config["threshold"])),
        }
    drifted = sum(c["drift_detected"] for c in columns.values())
    assert drifted == count, (drifted, count)
    return {
        "dataset_drift": bool(share >= options.get("drift_share", 0.5)),
        "share_of_drifted_columns": float(share),
        "number_of_drifted_columns": int(drifted),
        "number_of_columns": len(columns),
        "columns": columns,
        "skipped_columns": skipped,
    }


def cases():
    """The committed cases: (name, reference, current, options, file extension)."""
    rng = np.random.default_rng(20261206)

    def small(n, shift):
        return pd.DataFrame(
            {
                "amount": np.round(rng.lognormal(3.0 + shift, 1.0, n), 2),
                "score": np.round(rng.normal(shift, 1.0, n), 4),
                "rating": rng.choice([1, 2, 3, 4, 5], n, p=[0.1, 0.1, 0.2, 0.3, 0.3] if shift == 0 else [0.3, 0.2, 0.2, 0.2, 0.1]),
                "level": rng.choice([0.5, 1.5, 2.5], n),
                "flag": rng.choice([0, 1], n, p=[0.8, 0.2] if shift == 0 else [0.6, 0.4]).astype(float),
                "age": rng.integers(18, 80, n),
                "channel": rng.choice(["web", "app", "store", "phone"], n),
                "country": rng.choice(["FR", "DE"], n, p=[0.5, 0.5] if shift == 0 else [0.7, 0.3]),
                "member": rng.choice([True, False], n),
                "visits": pd.array(np.where(rng.random(n) < 0.1, np.nan, rng.poisson(4.0 + shift, n)), dtype="float64"),
                "note": [f"note {i} {rng.integers(1 << 30)}" for i in range(n)],
            }
        )

    yield "small", small(300, 0.0), small(200, 0.5), {}, "csv"
    yield "small_equal_sizes", small(250, 0.0), small(250, 0.2), {}, "csv"

    def large(n, shift):
        return pd.DataFrame(
            {
                "amount": np.round(rng.lognormal(3.0 + shift, 1.0, n), 2),
                "hour": rng.integers(0, 24, n),
                "level": rng.choice([0.5, 1.5, 2.5], n, p=[0.2, 0.3, 0.5] if shift == 0 else [0.5, 0.3, 0.2]),
                "channel": rng.choice(["web", "app", "store", "phone"], n),
                "constant": np.full(n, 7.0),
                "score": np.round(rng.normal(shift * 0.05, 1.0, n), 4),
            }
        )

    yield "large", large(1500, 0.0), large(1200, 1.0), {}, "parquet"
    yield "large_psi", large(1500, 0.0), large(1200, 0.3), {"method": "psi"}, "csv"
    yield "large_js_numeric", large(1400, 0.0), large(900, 0.3), {"num_method": "jensenshannon", "cat_method": "psi", "threshold": 0.05}, "csv"

    # A current sample above 10,000 rows: ks_2samp's asymptotic p-value (Kolmogorov's
    # distribution at round(mn / (m + n)) ~ 148), in its Smirnov, Durbin and Pelz-Good regions.
    def asymptotic(n, shift):
        return pd.DataFrame(
            {
                "far": np.round(rng.normal(shift * 0.5, 1.0, n), 2),
                "near": np.round(rng.normal(shift * 0.1, 1.0, n), 2),
                "same": np.round(rng.normal(0.0, 1.0, n), 2),
            }
        )

    reference, current = asymptotic(150, 0.0), asymptotic(10_200, 1.0)
    # The reference as the current sample's own quantiles: a statistic small enough for
    # Durbin's matrix (n x^1.5 <= 1.4).
    reference["quantiles"] = np.round(np.quantile(current["same"], (np.arange(150) + 0.5) / 150) + 0.06, 2)
    current["quantiles"] = current["same"]
    yield "ks_asymptotic", reference, current, {"method": "ks"}, "csv"


def write_fixtures(out):
    for name, reference, current, options, ext in cases():
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        for table, which in ((reference, "reference"), (current, "current")):
            path = os.path.join(folder, f"{which}.{ext}")
            if ext == "parquet":
                table.to_parquet(path, index=False)
            else:
                table.to_csv(path, index=False)
        reference = read(os.path.join(folder, f"reference.{ext}"))
        current = read(os.path.join(folder, f"current.{ext}"))
        result = evidently_report(reference, current, options)
        with open(os.path.join(folder, "expected.json"), "w") as f:
            json.dump({"options": options, "evidently": result}, f, indent=1, sort_keys=True)
            f.write("\n")
        print(name, result["number_of_drifted_columns"], "of", result["number_of_columns"], "drifted")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "fixtures":
        write_fixtures(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "report":
        options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
        print(json.dumps(evidently_report(read(sys.argv[2]), read(sys.argv[3]), options)))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
