"""Categoriser peer for bench/categorizer.sh.

`split SRC OUT_DIR [SEED [TEXT_COLUMN LABEL_COLUMN]]`: the issue's protocol. Reads a labelled CSV
(columns `description` and `label` unless given: the South African bank-statement lines), strips
both fields and drops rows with an empty one, drops every row of a label with fewer than 5 rows,
then scikit-learn's `train_test_split(test_size=0.25, stratify=labels, random_state=SEED)` (SEED 0
unless given). Writes OUT_DIR/train.csv and OUT_DIR/test.csv, which always name the columns
description, label, and prints one JSON line of counts.

`baseline OUT_DIR [PREDICTIONS]`: the peer, trained on train.csv and scored on test.csv:

    make_pipeline(
        make_union(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5)),
                   TfidfVectorizer(analyzer="word", ngram_range=(1, 1))),
        LogisticRegression(C=10, max_iter=5000))

Every other setting is scikit-learn's default (lower-casing, raw term counts (no sublinear tf),
smoothed idf, L2 norm per vectoriser, lbfgs, no class weights). Prints one JSON line; with
PREDICTIONS, also writes every test row's prediction there in the CSV layout of `infermesh eval
categorizer --predictions` (text, label, predicted, probability).

`compare OURS PEER [RESAMPLES]`: paired comparison of two such prediction files over the same
rows. Paired bootstrap (RESAMPLES, default 10000, seed 0) of the macro-F1 difference OURS - PEER
(median, 95% percentile interval, share of resamples where OURS is ahead), and an exact
two-sided McNemar test on the rows exactly one of the two gets right. Prints one JSON line.
"""
import csv
import json
import sys
import time
from collections import Counter

# Labels with fewer rows than this are dropped before the split.
MIN_ROWS_PER_LABEL = 5


def split(src, out, seed=0, text_column="description", label_column="label"):
    from sklearn.model_selection import train_test_split

    with open(src, newline="", encoding="utf-8") as f:
        rows = [(r[text_column].strip(), r[label_column].strip()) for r in csv.DictReader(f)]
    rows = [r for r in rows if r[0] and r[1]]
    counts = Counter(label for _, label in rows)
    kept = [r for r in rows if counts[r[1]] >= MIN_ROWS_PER_LABEL]
    train, test = train_test_split(kept, test_size=0.25, stratify=[y for _, y in kept],
                                   random_state=seed)
    for name, part in (("train", train), ("test", test)):
        with open(f"{out}/{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["description", "label"])
            w.writerows(part)
    print(json.dumps({"rows": len(rows), "labels": len(counts), "kept_rows": len(kept),
                      "kept_labels": sum(1 for c in counts.values() if c >= MIN_ROWS_PER_LABEL),
                      "train_rows": len(train), "test_rows": len(test), "seed": seed}))


def read(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["description"] for r in rows], [r["label"] for r in rows]


def macro_f1(truth, pred):
    """Macro-F1 over the union of true and predicted labels, as `infermesh eval` computes it."""
    from sklearn.metrics import f1_score
    labels = sorted(set(truth) | set(pred))
    return f1_score(truth, pred, labels=labels, average="macro", zero_division=0)


def baseline(out, predictions=None):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.pipeline import make_pipeline, make_union

    x_train, y_train = read(f"{out}/train.csv")
    x_test, y_test = read(f"{out}/test.csv")
    model = make_pipeline(
        make_union(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5)),
            TfidfVectorizer(analyzer="word", ngram_range=(1, 1)),
        ),
        LogisticRegression(C=10, max_iter=5000),
    )
    t0 = time.perf_counter()
    model.fit(x_train, y_train)
    train_s = time.perf_counter() - t0
    pred = model.predict(x_test)
    if predictions:
        proba = model.predict_proba(x_test).max(axis=1)
        with open(predictions, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label", "predicted", "probability"])
            w.writerows((x, y, p, f"{q:.6f}") for x, y, p, q in zip(x_test, y_test, pred, proba))
    print(json.dumps({
        "accuracy": accuracy_score(y_test, pred),
        "macro_f1": macro_f1(y_test, list(pred)),
        "n": len(y_test),
        "train_seconds": train_s,
    }))


def read_predictions(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [(r["text"], r["label"], r["predicted"]) for r in csv.DictReader(f)]


def compare(ours_path, peer_path, resamples=10000):
    import numpy as np
    from scipy.stats import binomtest

    ours, peer = read_predictions(ours_path), read_predictions(peer_path)
    if [(t, y) for t, y, _ in ours] != [(t, y) for t, y, _ in peer]:
        sys.exit(f"{ours_path} and {peer_path} do not hold the same rows in the same order")
    truth = [y for _, y, _ in ours]
    a, b = [p for _, _, p in ours], [p for _, _, p in peer]
    n = len(truth)
    rng = np.random.default_rng(0)
    deltas = np.empty(resamples)
    for k in range(resamples):
        idx = rng.integers(0, n, n)
        t = [truth[i] for i in idx]
        deltas[k] = macro_f1(t, [a[i] for i in idx]) - macro_f1(t, [b[i] for i in idx])
    only_ours = sum(1 for y, p, q in zip(truth, a, b) if p == y and q != y)
    only_peer = sum(1 for y, p, q in zip(truth, a, b) if q == y and p != y)
    discordant = only_ours + only_peer
    p_value = binomtest(only_ours, discordant, 0.5).pvalue if discordant else 1.0
    print(json.dumps({
        "n": n,
        "macro_f1_ours": macro_f1(truth, a),
        "macro_f1_peer": macro_f1(truth, b),
        "macro_f1_delta": macro_f1(truth, a) - macro_f1(truth, b),
        "bootstrap": {"resamples": resamples, "delta_median": float(np.median(deltas)),
                      "delta_ci95": [float(np.percentile(deltas, 2.5)),
                                     float(np.percentile(deltas, 97.5))],
                      "share_ours_ahead": float(np.mean(deltas > 0))},
        "mcnemar": {"only_ours_right": only_ours, "only_peer_right": only_peer,
                    "p_value_exact": p_value},
    }))


if __name__ == "__main__":
    if sys.argv[1] == "split":
        split(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0, *sys.argv[5:7])
    elif sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 10000)
    else:
        baseline(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
