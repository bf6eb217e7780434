"""Topic-model peer and scorer for bench/topics.sh.

`convert DATA_ROOT OUT_DIR`: writes OUT_DIR/bbc.csv and OUT_DIR/ag.csv (columns text, label;
never into the repository: the licences forbid copying the data). BBC News: every
bbc/<class>/*.txt as one text (headline and body, newlines as spaces; the one Latin-1 byte
of sport/199.txt read with errors="replace"), label = the folder; the 98 byte-duplicates are
kept (the same rows go to both sides). AG News test: title + ". " + description, with the
source's escapes undone (`#36;` -> `$`, `#39;` -> `'`, `quot;` -> `"`, `\\` -> space), label =
World / Sports / Business / Sci/Tech from the 1-4 index. Prints one JSON line of counts.

`fit CSV NPY OUT_DIR SEEDS DEFAULT_RUNS`: BERTopic 0.17 on the precomputed embeddings
(`fit_transform(docs, embeddings)`: no embedding model is loaded or run), with BERTopic's
default pipeline spelled out so that only the seed differs:

    UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", low_memory=False,
         random_state=SEED)
    HDBSCAN(min_cluster_size=10, metric="euclidean", cluster_selection_method="eom",
            prediction_data=True)
    BERTopic(umap_model=..., hdbscan_model=..., min_topic_size=10)   # CountVectorizer(), c-TF-IDF

One fit per seed in SEEDS (umap-learn runs single-threaded when given a random_state), then
DEFAULT_RUNS fits of plain `BERTopic(min_topic_size=10)`, whose UMAP has no random_state and so
runs its parallel (2-thread here), non-deterministic code path. Before them, one fit on the
first 500 rows compiles umap-learn's and pynndescent's numba functions; its time is printed as
`jit_warmup_seconds` and is not in any median. The fit time is `fit_transform` alone. Writes
OUT_DIR/peer-<seed>.csv and OUT_DIR/peer-default-<i>.csv (a header `topic`, then one topic per
row in order, -1 for outliers) and prints one JSON line per fit.

`reload CSV NPY SEED`: fits as above, then transforms the same rows before saving and after
`save` + `BERTopic.load` with serialization "pickle" (UMAP and HDBSCAN kept) and "safetensors"
(BERTopic's recommended format, which drops them: transform then assigns by cosine similarity
to the topic embeddings). Prints the share of rows whose topic is unchanged after each reload
(and whether every probability is bit-identical for pickle).

`score LABELS_CSV ASSIGNMENTS_CSV`: the scorer used for both sides. NMI (arithmetic
normaliser, scikit-learn's default) and ARI of the `topic` column against the `label` column,
outliers (-1) counted as one more cluster on both sides, as scikit-learn counts any label;
plus the outlier share and the number of topics. Prints one JSON line.
"""
import csv
import json
import os
import sys
import time


def convert(root, out):
    os.makedirs(out, exist_ok=True)
    bbc_root = os.path.join(root, "bbc-news", "bbc")
    rows = []
    for label in sorted(os.listdir(bbc_root)):
        folder = os.path.join(bbc_root, label)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.endswith(".txt"):
                with open(os.path.join(folder, name), "rb") as f:
                    text = f.read().decode("utf-8", errors="replace")
                rows.append((" ".join(text.split()), label))
    counts = {"bbc": len(rows)}
    write(os.path.join(out, "bbc.csv"), rows)

    names = {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"}
    rows = []
    with open(os.path.join(root, "ag-news-test", "test.csv"), newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            text = f"{r['title'].strip()}. {r['description'].strip()}"
            for a, b in ((" #36;", " $"), ("#36;", "$"), ("#39;", "'"), ("quot;", '"'), ("\\", " ")):
                text = text.replace(a, b)
            rows.append((" ".join(text.split()), names[r["label"].strip()]))
    counts["ag"] = len(rows)
    write(os.path.join(out, "ag.csv"), rows)
    print(json.dumps(counts))


def write(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)


def read(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def model(seed):
    from bertopic import BERTopic
    from hdbscan import HDBSCAN
    from umap import UMAP

    if seed is None:
        return BERTopic(min_topic_size=10)
    umap_model = UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine",
                      low_memory=False, random_state=seed)
    hdbscan_model = HDBSCAN(min_cluster_size=10, metric="euclidean",
                            cluster_selection_method="eom", prediction_data=True)
    return BERTopic(umap_model=umap_model, hdbscan_model=hdbscan_model, min_topic_size=10)


def write_topics(path, topics):
    with open(path, "w", encoding="utf-8") as f:
        f.write("topic\n")
        f.writelines(f"{int(t)}\n" for t in topics)


def fit(csv_path, npy, out, seeds, default_runs):
    import numpy as np

    docs, _ = read(csv_path)
    emb = np.load(npy)
    assert emb.shape[0] == len(docs), (emb.shape, len(docs))
    started = time.perf_counter()
    model(0).fit_transform(docs[:500], emb[:500])
    print(json.dumps({"jit_warmup_seconds": time.perf_counter() - started}), flush=True)
    runs = [(f"peer-{s}", int(s)) for s in seeds.split()]
    runs += [(f"peer-default-{i}", None) for i in range(int(default_runs))]
    for name, seed in runs:
        m = model(seed)
        started = time.perf_counter()
        topics, _ = m.fit_transform(docs, emb)
        seconds = time.perf_counter() - started
        write_topics(os.path.join(out, f"{name}.csv"), topics)
        print(json.dumps({"run": name, "seed": seed, "fit_seconds": seconds,
                          "topics": len(set(topics) - {-1})}), flush=True)


def reload(csv_path, npy, seed):
    import tempfile

    import numpy as np
    from bertopic import BERTopic

    docs, _ = read(csv_path)
    emb = np.load(npy)
    m = model(int(seed))
    m.fit_transform(docs, emb)
    before, p_before = m.transform(docs, emb)
    result = {"rows": len(docs)}
    for serialization in ("pickle", "safetensors"):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model" if serialization != "pickle" else "model.pkl")
            m.save(path, serialization=serialization, save_ctfidf=True)
            loaded = BERTopic.load(path)
            after, p_after = loaded.transform(docs, emb)
        same = float(np.mean(np.asarray(before) == np.asarray(after)))
        result[f"{serialization}_same_topic_share"] = same
        if serialization == "pickle" and p_before is not None and p_after is not None:
            result["pickle_probabilities_identical"] = bool(
                np.array_equal(np.asarray(p_before), np.asarray(p_after)))
    print(json.dumps(result))


def score(labels_csv, assignments_csv):
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    _, labels = read(labels_csv)
    with open(assignments_csv, newline="", encoding="utf-8") as f:
        topics = [int(r["topic"]) for r in csv.DictReader(f)]
    assert len(topics) == len(labels), (len(topics), len(labels))
    print(json.dumps({
        "nmi": normalized_mutual_info_score(labels, topics),
        "ari": adjusted_rand_score(labels, topics),
        "outlier_share": sum(t == -1 for t in topics) / len(topics),
        "topics": len(set(topics) - {-1}),
        "rows": len(topics),
    }))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"convert": convert, "fit": fit, "reload": reload, "score": score}[command](*args)
