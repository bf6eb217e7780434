#!/usr/bin/env python3
"""Checks infermesh-topics' TopicModel against BERTopic 0.17 end to end, on the same texts
and precomputed embeddings.

Runs in the venv of tools/umap_check.py plus the peer (this script installs nothing):

    PY=~/.cache/infermesh/venv-topics-peer/bin/python
    ~/.cache/infermesh/venv-topics-peer/bin/pip install hdbscan==0.8.44 pandas plotly pyyaml
    ~/.cache/infermesh/venv-topics-peer/bin/pip install --no-deps bertopic==0.17.4
    $PY tools/bertopic_check.py /tmp/bertopic-check
    cargo run --release -p infermesh-topics --example bertopic_check -- /tmp/bertopic-check

The corpus is synthetic (no model download): 8 topics of 12 words each, 60 documents per
topic of 10 topic words and 4 common words, 40 noise documents of random topic words; 384-d
embeddings around one random centre per topic (noise: random directions). 80 more documents
are held out for transform. BERTopic runs with BERTopic's defaults (UMAP 15/5/0.0/cosine with
random_state 42, HDBSCAN min_cluster_size 10) and CountVectorizer(stop_words="english").
"""
import json
import sys
from pathlib import Path

import numpy as np
from bertopic import BERTopic
from hdbscan import HDBSCAN
from sklearn.feature_extraction.text import CountVectorizer
from umap import UMAP

WORDS = [
    "football goal league striker referee stadium coach match penalty season fans trophy",
    "inflation bank interest rates market stocks bonds economy prices growth investors debt",
    "galaxy telescope planet orbit nasa comet stars rocket astronaut moon launch mission",
    "recipe oven flour butter sugar baking dough cake bread cookies chocolate vanilla",
    "election vote senate parliament candidate campaign ballot policy minister party debate law",
    "virus vaccine hospital doctor patients disease infection symptoms clinic nurse treatment health",
    "software python code compiler database server linux bug release developer kernel api",
    "guitar concert album band singer drums song music tour lyrics studio melody",
]
COMMON = "people today really think make good year time".split()


def corpus(rng, per_topic, noise, centres):
    texts, emb, truth = [], [], []
    for i in range(per_topic * len(WORDS)):
        t = i % len(WORDS)
        words = list(rng.choice(WORDS[t].split(), 10)) + list(rng.choice(COMMON, 4))
        rng.shuffle(words)
        texts.append(" ".join(words))
        emb.append(centres[t] + rng.normal(0, 0.8, centres.shape[1]))
        truth.append(t)
    allw = " ".join(WORDS).split()
    for _ in range(noise):
        texts.append(" ".join(rng.choice(allw, 12)))
        emb.append(rng.normal(0, 1.0, centres.shape[1]))
        truth.append(-1)
    return texts, np.array(emb, dtype=np.float32), np.array(truth)


def main(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    centres = rng.normal(0, 1, (len(WORDS), 384))
    texts, emb, truth = corpus(rng, 60, 40, centres)
    new_texts, new_emb, new_truth = corpus(rng, 10, 0, centres)
    model = BERTopic(
        umap_model=UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=42),
        hdbscan_model=HDBSCAN(min_cluster_size=10, metric="euclidean", cluster_selection_method="eom",
                              prediction_data=True),
        vectorizer_model=CountVectorizer(stop_words="english"),
    )
    topics, _ = model.fit_transform(texts, emb)
    new_topics, new_probs = model.transform(new_texts, new_emb)
    keywords = {str(t): [w for w, _ in model.get_topic(t)] for t in sorted(set(topics))}
    (folder / "texts.txt").write_text("\n".join(texts))
    (folder / "new_texts.txt").write_text("\n".join(new_texts))
    np.savetxt(folder / "embeddings.csv", emb, delimiter=",", fmt="%.9g")
    np.savetxt(folder / "new_embeddings.csv", new_emb, delimiter=",", fmt="%.9g")
    out = dict(truth=truth.tolist(), new_truth=new_truth.tolist(), topics=[int(t) for t in topics],
               new_topics=[int(t) for t in new_topics], keywords=keywords,
               labels={str(k): v for k, v in model.topic_labels_.items()})
    (folder / "bertopic.json").write_text(json.dumps(out, indent=1))
    print(f"BERTopic: {len(set(topics)) - (1 if -1 in topics else 0)} topics, "
          f"{sum(1 for t in topics if t == -1)} outliers of {len(topics)}")
    for t in sorted(set(topics)):
        print(f"  {model.topic_labels_[t]}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
