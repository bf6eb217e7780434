#!/usr/bin/env bash
# Local sentiment classifier: `infermesh train sentiment` with its default flags (the
# categoriser's trainer: probe on frozen all-MiniLM-L6-v2 sentence embeddings blended with a
# TF-IDF lexical head) against TF-IDF (char_wb 2-5 grams + word unigrams) + scikit-learn
# LogisticRegression(C=10), on the UCI sentiment-labelled sentences (amazon, yelp, imdb:
# 3,000 sentences, negative/positive), one fixed stratified 75/25 split (seed 0; SEEDS lists
# others). It is bench/categorizer.sh with CATEGORIZER_DATA=sentiment: the same split, peer,
# paired bootstrap and McNemar test; INFERMESH_BIN and CATEGORIZER_FLAGS work as there.
# Data: $INFERMESH_DATA/sentiment-labelled-sentences (see its PROVENANCE.md).
CATEGORIZER_DATA=sentiment SEEDS="${SEEDS:-0}" exec bash "$(dirname "$0")/categorizer.sh" "$@"
