//! The topic model end to end on a synthetic corpus.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{TOPIC_WORDS, corpus};
use infermesh_topics::metrics::adjusted_rand_index;
use infermesh_topics::{
    LoadLimits, MergeStrategy, OutlierStrategy, TopicModel, TopicParams, UmapParams,
};

fn params() -> TopicParams {
    TopicParams {
        umap: UmapParams {
            n_epochs: Some(200),
            ..UmapParams::default()
        },
        ..TopicParams::default()
    }
}

/// The true topic most of a found topic's documents have.
fn majority(found: &[i64], truth: &[i64]) -> HashMap<i64, i64> {
    let mut votes: HashMap<(i64, i64), usize> = HashMap::new();
    for (&f, &t) in found.iter().zip(truth) {
        *votes.entry((f, t)).or_default() += 1;
    }
    let mut best: HashMap<i64, (i64, usize)> = HashMap::new();
    for ((f, t), v) in votes {
        let e = best.entry(f).or_insert((t, 0));
        if v > e.1 || (v == e.1 && t < e.0) {
            *e = (t, v);
        }
    }
    best.into_iter().map(|(f, (t, _))| (f, t)).collect()
}

#[test]
fn recovers_the_topics_their_keywords_and_new_documents() {
    let c = corpus(40, 12, 1);
    let model = TopicModel::fit(&c.texts, &c.embeddings, &params()).unwrap();
    assert_eq!(model.n_topics(), 4, "{:#?}", model.topics());
    let found = model.document_topics();
    let ari = adjusted_rand_index(found, &c.truth);
    assert!(ari > 0.9, "ARI {ari}");
    // Topics by size: 0 is the largest.
    let sizes: Vec<usize> = model
        .topics()
        .iter()
        .filter(|t| t.id >= 0)
        .map(|t| t.size)
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    assert_eq!(
        sizes.iter().sum::<usize>()
            + model
                .topics()
                .iter()
                .find(|t| t.id == -1)
                .map_or(0, |t| t.size),
        172
    );
    // Each topic's keywords are its own words; stop words never appear; BERTopic's label.
    let map = majority(found, &c.truth);
    for t in model.topics().iter().filter(|t| t.id >= 0) {
        let truth = map[&t.id] as usize;
        assert_eq!(t.keywords.len(), 10, "{t:?}");
        for (w, _) in &t.keywords[..4] {
            assert!(
                TOPIC_WORDS[truth].contains(&w.as_str()),
                "topic {} keyword {w}",
                t.id
            );
        }
        assert!(t.keywords.iter().all(|(w, _)| w != "the"));
        let label: Vec<&str> = t.keywords[..4].iter().map(|k| k.0.as_str()).collect();
        assert_eq!(t.label, format!("{}_{}", t.id, label.join("_")));
        assert!(t.keywords.windows(2).all(|w| w[0].1 >= w[1].1));
    }
    // New documents from the same topics are assigned to the matching topic.
    let new = corpus(10, 0, 2);
    let (topics, probs) = model.transform(Some(&new.texts), &new.embeddings).unwrap();
    let right = topics
        .iter()
        .zip(&new.truth)
        .filter(|(f, t)| map.get(f) == Some(t))
        .count();
    assert!(right >= 38, "{right} of 40: {topics:?}");
    assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)));
}

#[test]
fn the_same_seed_gives_the_same_model_and_save_load_keeps_transform_bit_identical() {
    let c = corpus(30, 8, 3);
    let a = TopicModel::fit(&c.texts, &c.embeddings, &params()).unwrap();
    let b = TopicModel::fit(&c.texts, &c.embeddings, &params()).unwrap();
    assert_eq!(a, b);
    let new = corpus(6, 4, 4);
    let (ta, pa) = a.transform(None::<&[String]>, &new.embeddings).unwrap();
    let dir = tempfile::tempdir().unwrap();
    a.save(dir.path()).unwrap();
    let loaded = TopicModel::load(dir.path(), &LoadLimits::default()).unwrap();
    let (tl, pl) = loaded
        .transform(None::<&[String]>, &new.embeddings)
        .unwrap();
    assert_eq!(ta, tl);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&pa), bits(&pl));
    assert_eq!(a.umap(), loaded.umap());
    assert_eq!(a.hdbscan(), loaded.hdbscan());
    assert_eq!(a.topics().len(), loaded.topics().len());
    for (x, y) in a.topics().iter().zip(loaded.topics()) {
        assert_eq!((x.id, x.size, &x.label), (y.id, y.size, &y.label));
    }
    assert_eq!(a.document_topics(), loaded.document_topics());
    // Another seed gives another layout.
    let mut p = params();
    p.umap.seed = 7;
    let other = TopicModel::fit(&c.texts, &c.embeddings, &p).unwrap();
    assert_ne!(a.umap().embedding_slice(), other.umap().embedding_slice());
}

#[test]
fn topics_merge_to_nr_topics_by_either_strategy() {
    let c = corpus(30, 0, 5);
    let full = TopicModel::fit(&c.texts, &c.embeddings, &params()).unwrap();
    assert_eq!(full.n_topics(), 4);
    for merge in [
        MergeStrategy::Agglomerative,
        MergeStrategy::SmallestIntoMostSimilar,
    ] {
        let mut p = params();
        p.nr_topics = Some(2);
        p.merge = merge;
        let m = TopicModel::fit(&c.texts, &c.embeddings, &p).unwrap();
        assert_eq!(m.n_topics(), 2, "{merge:?}");
        let sizes: Vec<usize> = m.topics().iter().map(|t| t.size).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 120, "{merge:?}");
        assert!(sizes[0] >= sizes[1]);
        // Merging is a coarsening: documents of one fitted topic stay together.
        let pairs: std::collections::HashSet<(i64, i64)> = full
            .document_topics()
            .iter()
            .copied()
            .zip(m.document_topics().iter().copied())
            .collect();
        assert_eq!(pairs.len(), 4, "{merge:?}: {pairs:?}");
        // transform follows the merge.
        let (t, _) = m.transform(None::<&[String]>, &c.embeddings).unwrap();
        assert!(t.iter().all(|&x| (0..2).contains(&x)), "{t:?}");
    }
    // reduce_topics on a fitted model does the same as fitting with nr_topics.
    let mut r = full.clone();
    r.reduce_topics(2, MergeStrategy::Agglomerative, None)
        .unwrap();
    let mut p = params();
    p.nr_topics = Some(2);
    let fitted = TopicModel::fit(&c.texts, &c.embeddings, &p).unwrap();
    assert_eq!(r.document_topics(), fitted.document_topics());
}

#[test]
fn outliers_are_reassigned_and_new_documents_update_the_topics() {
    let c = corpus(30, 15, 6);
    let mut model = TopicModel::fit(&c.texts, &c.embeddings, &params()).unwrap();
    // UMAP attaches uniform noise to its nearest topic, so HDBSCAN finds few outliers here:
    // make the noise documents the outliers to reassign.
    let mut topics = model.document_topics().to_vec();
    topics[120..].iter_mut().for_each(|t| *t = -1);
    for strategy in [OutlierStrategy::Embeddings, OutlierStrategy::CTfIdf] {
        let none = model
            .reduce_outliers(&c.texts, Some(&c.embeddings), &topics, strategy, 1.01)
            .unwrap();
        assert_eq!(
            none, topics,
            "{strategy:?}: nothing reaches a threshold above 1"
        );
        let all = model
            .reduce_outliers(&c.texts, Some(&c.embeddings), &topics, strategy, 0.0)
            .unwrap();
        // Similarities below the threshold count as 0, so an outlier whose every similarity
        // is negative (possible with embeddings) stays -1, as in BERTopic.
        let moved = all[120..].iter().filter(|&&t| t >= 0).count();
        let want = if strategy == OutlierStrategy::CTfIdf {
            15
        } else {
            10
        };
        assert!(moved >= want, "{strategy:?}: {all:?}");
        for (a, b) in all.iter().zip(&topics) {
            assert!(*b == -1 || a == b, "only outliers move");
        }
    }
    // A document about baking with no embedding signal goes to the baking topic by c-TF-IDF
    // (a topic, not the outliers, whose keywords may share its words).
    let baking = model
        .topics()
        .iter()
        .find(|t| t.id >= 0 && t.keywords.iter().any(|k| k.0 == "flour"))
        .unwrap()
        .id;
    let r = model
        .reduce_outliers(
            &["butter sugar flour oven"],
            None,
            &[-1],
            OutlierStrategy::CTfIdf,
            0.1,
        )
        .unwrap();
    assert_eq!(r, vec![baking]);
    let new_topics = model
        .reduce_outliers(
            &c.texts,
            Some(&c.embeddings),
            &topics,
            OutlierStrategy::Embeddings,
            0.0,
        )
        .unwrap();
    let left = new_topics.iter().filter(|&&t| t == -1).count();
    model
        .update_topics(&c.texts, &c.embeddings, &new_topics, None)
        .unwrap();
    let outlier_size = model
        .topics()
        .iter()
        .find(|t| t.id == -1)
        .map_or(0, |t| t.size);
    assert_eq!(
        outlier_size, left,
        "the outlier topic holds the documents left at -1"
    );
    assert_eq!(model.topics().iter().map(|t| t.size).sum::<usize>(), 135);

    // partial_fit: sizes grow by the batch, a new word enters the vocabulary.
    let before: usize = model.topics().iter().map(|t| t.size).sum();
    let mut new = corpus(5, 0, 7);
    for (t, _) in new
        .texts
        .iter_mut()
        .zip(&new.truth)
        .filter(|(_, truth)| **truth == 3)
    {
        t.push_str(" sourdough sourdough sourdough sourdough sourdough sourdough");
    }
    let (assigned, _) = model
        .partial_fit(&new.texts, &new.embeddings, None)
        .unwrap();
    assert_eq!(assigned.len(), 20);
    assert_eq!(
        model.topics().iter().map(|t| t.size).sum::<usize>(),
        before + 20
    );
    let baking_topic = model.topics().iter().find(|t| t.id == baking).unwrap();
    assert!(
        baking_topic.keywords.iter().any(|k| k.0 == "sourdough"),
        "{baking_topic:?}"
    );
}

#[test]
fn bad_inputs_are_refused() {
    let c = corpus(10, 0, 8);
    assert!(TopicModel::fit(&c.texts[..5], &c.embeddings, &params()).is_err());
    let mut p = params();
    p.hdbscan.min_cluster_size = 1;
    assert!(TopicModel::fit(&c.texts, &c.embeddings, &p).is_err());
    let model = TopicModel::fit(&c.texts, &c.embeddings, &params()).unwrap();
    let wrong = infermesh_topics::Matrix::new(1, 3, vec![0.0; 3]).unwrap();
    assert!(model.transform(None::<&[String]>, &wrong).is_err());
}

/// Eight topics in two groups of four: a group's centres close (each topic shifted from the
/// group's base on three dimensions of its own, a shift of norm ~1.2 against a within-topic
/// spread of ~0.4), the groups far apart. BERTopic's `nr_topics="auto"` groups the topic
/// embeddings with HDBSCAN (`min_cluster_size` 2), so each group becomes one topic. (Two
/// groups of two are too few: HDBSCAN, the library as this crate, finds no cluster in four
/// points.)
#[test]
fn auto_reduction_merges_the_topics_whose_embeddings_group() {
    let mut g = common::Gen::new(21);
    let dim = common::DIM;
    let base: Vec<Vec<f32>> = (0..2)
        .map(|_| (0..dim).map(|_| g.uniform() * 2.0 - 1.0).collect())
        .collect();
    let centre = |t: usize| -> Vec<f32> {
        let mut c = base[t / 4].clone();
        let j = t % 4;
        for v in &mut c[3 * j..3 * j + 3] {
            *v += 0.7;
        }
        c
    };
    let (mut texts, mut data, mut truth) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..240 {
        let t = i % 8;
        let words: Vec<&str> = (0..6).map(|_| g.pick(TOPIC_WORDS[t % 4])).collect();
        texts.push(words.join(" "));
        data.extend(centre(t).iter().map(|c| c + (g.uniform() - 0.5) * 0.3));
        truth.push(t as i64);
    }
    let emb = infermesh_topics::Matrix::new(240, dim, data).unwrap();
    let full = TopicModel::fit(&texts, &emb, &params()).unwrap();
    assert_eq!(full.n_topics(), 8, "{:?}", full.topics());
    let mut auto = full.clone();
    assert_eq!(auto.reduce_topics_auto(None).unwrap(), 2);
    assert_eq!(auto.n_topics(), 2);
    // Each merged topic holds one group: true topics 0-3, or 4-7.
    let mut group_of = HashMap::new();
    for (&found, &t) in auto.document_topics().iter().zip(&truth) {
        let e = *group_of.entry(found).or_insert(t / 4);
        assert_eq!(e, t / 4, "topic {found} mixes groups");
    }
    assert_eq!(group_of.len(), 2);
    let sizes: Vec<usize> = auto.topics().iter().map(|t| t.size).collect();
    assert_eq!(sizes, vec![120, 120]);
    // transform follows the merge.
    let (t, _) = auto.transform(None::<&[String]>, &emb).unwrap();
    assert!(t.iter().all(|&x| (0..2).contains(&x)), "{t:?}");
    assert!(adjusted_rand_index(&t, auto.document_topics()) > 0.95);
    // Fewer than three topics are left as they are.
    let mut two = auto.clone();
    assert_eq!(two.reduce_topics_auto(None).unwrap(), 2);
    assert_eq!(two.document_topics(), auto.document_topics());
}
