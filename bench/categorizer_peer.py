"""Categoriser baseline for bench/categorizer.sh.

`split SRC OUT_DIR [SEED]`: stratified 80/20 split (seed 42 unless given) of the South African bank-statement
lines (description -> label) into OUT_DIR/train.csv and OUT_DIR/test.csv. Per label,
round(0.2 * n) rows (at least 1) go to test when the label has 2+ rows; labels with a single
row stay in train (scikit-learn's stratify refuses them).

`baseline OUT_DIR`: TF-IDF (word 1-2 grams + char_wb 2-5 grams) + logistic regression
(class_weight=balanced) trained on train.csv, scored on test.csv. Prints one JSON line.
"""
import csv
import json
import random
import sys
import time
from collections import defaultdict


def split(src, out, seed=42):
    with open(src, newline="", encoding="utf-8") as f:
        rows = [(r["description"].strip(), r["label"].strip()) for r in csv.DictReader(f)]
    rows = [r for r in rows if r[0] and r[1]]
    by_label = defaultdict(list)
    for i, (_, label) in enumerate(rows):
        by_label[label].append(i)
    rng = random.Random(seed)
    test = set()
    for label in sorted(by_label):
        idx = by_label[label]
        if len(idx) < 2:
            continue
        rng.shuffle(idx)
        k = min(max(1, round(0.2 * len(idx))), len(idx) - 1)
        test.update(idx[:k])
    for name, keep in (("train", lambda i: i not in test), ("test", lambda i: i in test)):
        with open(f"{out}/{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["description", "label"])
            w.writerows(rows[i] for i in range(len(rows)) if keep(i))
    print(json.dumps({"rows": len(rows), "labels": len(by_label), "test_rows": len(test)}))


def read(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["description"] for r in rows], [r["label"] for r in rows]


def baseline(out):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline, make_union

    x_train, y_train = read(f"{out}/train.csv")
    x_test, y_test = read(f"{out}/test.csv")
    model = make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        ),
        LogisticRegression(C=10.0, max_iter=5000, class_weight="balanced"),
    )
    t0 = time.perf_counter()
    model.fit(x_train, y_train)
    train_s = time.perf_counter() - t0
    pred = model.predict(x_test)
    # Macro-F1 over the union of true and predicted labels, as `infermesh eval` computes it.
    labels = sorted(set(y_test) | set(pred))
    print(json.dumps({
        "accuracy": accuracy_score(y_test, pred),
        "macro_f1": f1_score(y_test, pred, labels=labels, average="macro", zero_division=0),
        "n": len(y_test),
        "train_seconds": train_s,
    }))


if __name__ == "__main__":
    if sys.argv[1] == "split":
        split(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 42)
    else:
        baseline(sys.argv[2])
