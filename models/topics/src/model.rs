//! The topic model: BERTopic 0.17's `fit` / `transform` on precomputed embeddings, its topic
//! reduction, outlier reduction and topic update, and an incremental update.
//!
//! - **fit**: UMAP of the embeddings ([`UmapParams`], BERTopic's defaults), HDBSCAN of the
//!   layout ([`HdbscanParams`], `min_cluster_size` = BERTopic's `min_topic_size`), topics
//!   renumbered by size (topic 0 the largest, `-1` the outliers), word counts per topic
//!   (outliers a class of their own when there are any), c-TF-IDF and keywords, and the
//!   topic embeddings (mean of each topic's document embeddings, as BERTopic's
//!   `topic_embeddings_`). With `nr_topics`, topics are then merged ([`MergeStrategy`]).
//! - **transform**: UMAP `transform`, then HDBSCAN `approximate_predict`, mapped to the
//!   current topic ids: `(topic, probability)` per row.
//! - **reduce_outliers**: BERTopic's strategies `"c-tf-idf"` (each outlier's bag of words under
//!   the fitted idf, cosine to the topics' c-TF-IDF rows) and `"embeddings"` (cosine of its
//!   embedding to the topic embeddings); the most similar topic when its similarity reaches
//!   `threshold`, else it stays `-1`. It returns new assignments; [`TopicModel::update_topics`]
//!   applies them (BERTopic's `update_topics`).
//! - **partial_fit** (not BERTopic's online mode): BERTopic's `partial_fit` needs online
//!   sub-models (IncrementalPCA, MiniBatchKMeans, OnlineCountVectorizer) and re-clusters every
//!   batch. Here the UMAP and HDBSCAN fits stay as they are: new documents are assigned by
//!   `transform`, and their word counts, the topic sizes and the topic embeddings are added
//!   to the topics they join (new words extend the vocabulary, as OnlineCountVectorizer does,
//!   without decay); c-TF-IDF and keywords are recomputed from the accumulated counts. Topic
//!   ids do not change.

use serde::{Deserialize, Serialize};

use crate::ctfidf::{
    self, ClassCounts, Ctfidf, CtfidfParams, KeywordEmbedder, VectorizerParams, preprocess,
    tokenize,
};
use crate::hdbscan::{Hdbscan, HdbscanParams};
use crate::umap::{Umap, UmapParams};
use crate::{Matrix, TopicError};

/// Documents tokenised together (in parallel) when words are counted.
const TOKENIZE_CHUNK: usize = 4096;

/// How `nr_topics` merges topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MergeStrategy {
    /// BERTopic 0.17's `_reduce_to_n_topics`: average-linkage agglomerative clustering of the
    /// topic embeddings under cosine distance into `nr_topics` (less the outlier topic).
    #[default]
    Agglomerative,
    /// BERTopic's older rule: repeatedly merge the smallest topic into the one most similar
    /// to it by c-TF-IDF cosine (recomputed after each merge).
    SmallestIntoMostSimilar,
}

/// How `reduce_outliers` measures similarity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutlierStrategy {
    /// The document's c-TF-IDF against the topics' (`strategy="c-tf-idf"`).
    CTfIdf,
    /// The document's embedding against the topic embeddings (`strategy="embeddings"`).
    Embeddings,
}

/// Everything `fit` takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TopicParams {
    /// UMAP (BERTopic: 15 neighbours, 5 components, min_dist 0, cosine).
    pub umap: UmapParams,
    /// HDBSCAN (`min_cluster_size` is BERTopic's `min_topic_size`, 10).
    pub hdbscan: HdbscanParams,
    /// Tokenisation.
    pub vectorizer: VectorizerParams,
    /// c-TF-IDF and keywords.
    pub ctfidf: CtfidfParams,
    /// Merge to this many topics (the outlier topic counted, as BERTopic counts it).
    pub nr_topics: Option<usize>,
    /// How to merge.
    pub merge: MergeStrategy,
}

/// One topic as `get_topic_info` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicInfo {
    /// `-1` for the outliers, else `0..` by size at fit time.
    pub id: i64,
    /// Documents in the topic.
    pub size: usize,
    /// Keywords with their c-TF-IDF weights, best first.
    pub keywords: Vec<(String, f64)>,
    /// BERTopic's default label: the id and the first four keywords joined by `_`.
    pub label: String,
}

/// A fitted topic model.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicModel {
    pub(crate) params: TopicParams,
    pub(crate) umap: Umap,
    pub(crate) hdbscan: Hdbscan,
    /// HDBSCAN label -> topic id.
    pub(crate) cluster_topic: Vec<i64>,
    /// Class `t + 1` holds topic `t`; class 0 the outliers.
    pub(crate) counts: ClassCounts,
    /// Documents per class.
    pub(crate) sizes: Vec<usize>,
    /// Sum of the document embeddings per class (`classes x input_dim`).
    pub(crate) embedding_sums: Vec<f64>,
    /// The training documents' topics and probabilities.
    pub(crate) doc_topics: Vec<i64>,
    pub(crate) doc_probabilities: Vec<f32>,
    pub(crate) ctfidf: Ctfidf,
    pub(crate) topics: Vec<TopicInfo>,
}

fn check_docs<S: AsRef<str>>(texts: &[S], embeddings: &Matrix) -> Result<(), TopicError> {
    if texts.len() != embeddings.rows() {
        return Err(TopicError::InvalidInput(format!(
            "{} texts for {} embeddings",
            texts.len(),
            embeddings.rows()
        )));
    }
    embeddings.check_finite("embeddings")
}

impl TopicModel {
    /// Fits topics to `texts` and their `embeddings` (one row per text).
    pub fn fit<S: AsRef<str>>(
        texts: &[S],
        embeddings: &Matrix,
        params: &TopicParams,
    ) -> Result<Self, TopicError> {
        Self::fit_with(texts, embeddings, params, None)
    }

    /// [`TopicModel::fit`] with a keyword embedder for MMR (see [`ctfidf`]).
    pub fn fit_with<S: AsRef<str>>(
        texts: &[S],
        embeddings: &Matrix,
        params: &TopicParams,
        embedder: Option<&dyn KeywordEmbedder>,
    ) -> Result<Self, TopicError> {
        check_docs(texts, embeddings)?;
        params.hdbscan.check()?;
        if params.nr_topics == Some(0) {
            return Err(TopicError::InvalidParams(
                "nr_topics must be at least 1".into(),
            ));
        }
        // The documents' words are numbered on a second thread, one document after another,
        // while UMAP lays the rows out (its SGD, the longest stage, leaves the other cores
        // idle); they are counted into the topics once HDBSCAN has found them.
        let docs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let mut counts = ClassCounts::new(0);
        let (umap, doc_words) = std::thread::scope(|scope| {
            let words = scope.spawn(|| {
                docs.iter()
                    .map(|doc| counts.intern_all(document_tokens(&params.vectorizer, doc)))
                    .collect::<Vec<_>>()
            });
            let umap = Umap::fit(embeddings, &params.umap);
            (
                umap,
                words
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            )
        });
        let umap = umap?;
        let hdbscan = Hdbscan::fit(
            umap.embedding_slice(),
            params.umap.n_components,
            &params.hdbscan,
        )?;
        let n_clusters = hdbscan.n_clusters();
        // Topics by size, largest first (ties to the lower HDBSCAN label).
        let mut cluster_sizes = vec![0usize; n_clusters];
        for &l in hdbscan.labels().iter().filter(|&&l| l >= 0) {
            cluster_sizes[l as usize] += 1;
        }
        let mut order: Vec<usize> = (0..n_clusters).collect();
        order.sort_by_key(|&c| std::cmp::Reverse(cluster_sizes[c]));
        let mut cluster_topic = vec![-1i64; n_clusters];
        for (topic, &c) in order.iter().enumerate() {
            cluster_topic[c] = topic as i64;
        }
        let doc_topics: Vec<i64> = hdbscan
            .labels()
            .iter()
            .map(|&l| if l < 0 { -1 } else { cluster_topic[l as usize] })
            .collect();
        let doc_probabilities = hdbscan.probabilities().iter().map(|&p| p as f32).collect();
        let mut model = Self {
            params: params.clone(),
            umap,
            hdbscan,
            cluster_topic,
            counts,
            sizes: vec![0; n_clusters + 1],
            embedding_sums: vec![0.0; (n_clusters + 1) * embeddings.cols()],
            doc_topics: Vec::new(),
            doc_probabilities,
            ctfidf: Ctfidf::fit(&ClassCounts::new(0), &params.ctfidf, &[]),
            topics: Vec::new(),
        };
        model.counts.reset_classes(n_clusters + 1);
        model.add_interned(&doc_words, embeddings, &doc_topics);
        model.doc_topics = doc_topics;
        if let Some(nr) = params.nr_topics {
            model.reduce(nr, params.merge, embedder)?;
        } else {
            model.refresh(embedder)?;
        }
        Ok(model)
    }

    /// Adds documents' tokens, sizes and embeddings to their topics' classes; new words extend
    /// the vocabulary in document order (see [`intern_documents`]).
    fn add_documents<S: AsRef<str>>(&mut self, texts: &[S], embeddings: &Matrix, topics: &[i64]) {
        let n = texts.len().min(topics.len());
        let docs: Vec<&str> = texts[..n].iter().map(AsRef::as_ref).collect();
        let doc_words = intern_documents(&docs, &self.params.vectorizer, &mut self.counts);
        self.add_interned(&doc_words, embeddings, topics);
    }

    /// Adds documents, as their words' vocabulary indices, with their sizes and embeddings to
    /// their topics' classes.
    fn add_interned(&mut self, doc_words: &[Vec<u32>], embeddings: &Matrix, topics: &[i64]) {
        let dim = embeddings.cols();
        for (i, (words, &topic)) in doc_words.iter().zip(topics).enumerate() {
            let class = (topic + 1) as usize;
            self.counts.add_ids(class, words);
            self.sizes[class] += 1;
            for (s, &v) in self.embedding_sums[class * dim..(class + 1) * dim]
                .iter_mut()
                .zip(embeddings.row(i))
            {
                *s += f64::from(v);
            }
        }
    }

    /// Recomputes c-TF-IDF, keywords and labels from the counts.
    fn refresh(&mut self, embedder: Option<&dyn KeywordEmbedder>) -> Result<(), TopicError> {
        let present: Vec<bool> = self.sizes.iter().map(|&s| s > 0).collect();
        self.ctfidf = Ctfidf::fit(&self.counts, &self.params.ctfidf, &present);
        let mut topics = Vec::new();
        for (class, &size) in self.sizes.iter().enumerate() {
            let id = class as i64 - 1;
            if size == 0 && id < 0 {
                continue;
            }
            let keywords = ctfidf::keywords(
                &self.ctfidf.rows[class],
                self.counts.words(),
                &self.params.ctfidf,
                embedder,
            )
            .map_err(TopicError::InvalidInput)?;
            let mut label = id.to_string();
            for (w, _) in keywords.iter().take(4) {
                label.push('_');
                label.push_str(w);
            }
            topics.push(TopicInfo {
                id,
                size,
                keywords,
                label,
            });
        }
        self.topics = topics;
        Ok(())
    }

    /// Number of topics, the outlier topic not counted.
    pub fn n_topics(&self) -> usize {
        self.sizes.len() - 1
    }

    /// The topics, `-1` first when there are outliers, then by id.
    pub fn topics(&self) -> &[TopicInfo] {
        &self.topics
    }

    /// The training documents' topics (BERTopic's `topics_`).
    pub fn document_topics(&self) -> &[i64] {
        &self.doc_topics
    }

    /// The training documents' HDBSCAN membership probabilities (BERTopic's `probabilities_`).
    pub fn document_probabilities(&self) -> &[f32] {
        &self.doc_probabilities
    }

    /// The mean embedding of each topic (`topic_embeddings_`): row `t + 1` for topic `t`, row
    /// 0 for the outliers (zeros when there are none).
    pub fn topic_embeddings(&self) -> Matrix {
        let dim = self.umap.input_dim();
        let mut out = self.embedding_sums.clone();
        for (class, &size) in self.sizes.iter().enumerate() {
            for v in &mut out[class * dim..(class + 1) * dim] {
                *v /= size.max(1) as f64;
            }
        }
        Matrix::new(
            self.sizes.len(),
            dim,
            out.into_iter().map(|v| v as f32).collect(),
        )
        .unwrap_or_else(|_| unreachable!("classes x input_dim values"))
    }

    /// The parameters it was fitted with.
    pub fn params(&self) -> &TopicParams {
        &self.params
    }

    /// The fitted UMAP.
    pub fn umap(&self) -> &Umap {
        &self.umap
    }

    /// The fitted HDBSCAN.
    pub fn hdbscan(&self) -> &Hdbscan {
        &self.hdbscan
    }

    /// The topic and its probability for each embedding row (`texts`, when given, must match
    /// the rows; the embeddings alone decide, as in BERTopic with precomputed embeddings).
    pub fn transform<S: AsRef<str>>(
        &self,
        texts: Option<&[S]>,
        embeddings: &Matrix,
    ) -> Result<(Vec<i64>, Vec<f32>), TopicError> {
        if let Some(t) = texts {
            check_docs(t, embeddings)?;
        }
        let layout = self.umap.transform(embeddings)?;
        let predicted = self.hdbscan.approximate_predict(layout.as_slice())?;
        Ok(predicted
            .into_iter()
            .map(|(label, p)| {
                if label < 0 {
                    (-1, p as f32)
                } else {
                    (self.cluster_topic[label as usize], p as f32)
                }
            })
            .unzip())
    }

    /// Merges topics until `nr_topics` remain, the outlier topic counted (BERTopic's
    /// `reduce_topics`); nothing happens when there are not more than that.
    pub fn reduce_topics(
        &mut self,
        nr_topics: usize,
        strategy: MergeStrategy,
        embedder: Option<&dyn KeywordEmbedder>,
    ) -> Result<(), TopicError> {
        if nr_topics == 0 {
            return Err(TopicError::InvalidParams(
                "nr_topics must be at least 1".into(),
            ));
        }
        self.reduce(nr_topics, strategy, embedder)
    }

    /// BERTopic's `nr_topics="auto"` (`_auto_reduce_topics`): HDBSCAN (`min_cluster_size`
    /// 2, Euclidean on the L2-normalised topic embeddings) groups similar topics; each group
    /// merges into one topic, and topics it leaves unclustered stay as they are. Fewer than
    /// three topics are left alone (HDBSCAN finds no group among two points). Returns how many
    /// topics remain.
    pub fn reduce_topics_auto(
        &mut self,
        embedder: Option<&dyn KeywordEmbedder>,
    ) -> Result<usize, TopicError> {
        let t = self.n_topics();
        if t < 3 {
            self.refresh(embedder)?;
            return Ok(t);
        }
        let emb = self.topic_embeddings();
        let dim = emb.cols();
        let mut rows: Vec<f32> = Vec::with_capacity(t * dim);
        for c in 1..=t {
            let r = emb.row(c);
            let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            rows.extend(r.iter().map(|v| if norm > 0.0 { v / norm } else { 0.0 }));
        }
        let h = Hdbscan::fit(
            &rows,
            dim,
            &HdbscanParams {
                min_cluster_size: 2,
                min_samples: None,
            },
        )?;
        // Clustered topics: one group per cluster; the others: a group each.
        let k = h.n_clusters();
        let mut next = k;
        let groups: Vec<usize> = h
            .labels()
            .iter()
            .map(|&l| {
                if l >= 0 {
                    l as usize
                } else {
                    next += 1;
                    next - 1
                }
            })
            .collect();
        self.apply_grouping(&groups, next);
        self.refresh(embedder)?;
        Ok(self.n_topics())
    }

    fn reduce(
        &mut self,
        nr_topics: usize,
        strategy: MergeStrategy,
        embedder: Option<&dyn KeywordEmbedder>,
    ) -> Result<(), TopicError> {
        let outliers = usize::from(self.sizes[0] > 0);
        let t = self.n_topics();
        if nr_topics >= t + outliers || nr_topics <= outliers {
            return self.refresh(embedder);
        }
        let target = nr_topics - outliers;
        // merged[old topic] = new group id (not yet sorted).
        let merged: Vec<usize> = match strategy {
            MergeStrategy::Agglomerative => {
                let emb = self.topic_embeddings();
                let rows: Vec<&[f32]> = (1..=t).map(|c| emb.row(c)).collect();
                average_linkage(&rows, target)
            }
            MergeStrategy::SmallestIntoMostSimilar => self.smallest_into_most_similar(target),
        };
        let n_groups = merged.iter().max().map_or(0, |m| m + 1);
        self.apply_grouping(&merged, n_groups);
        self.refresh(embedder)
    }

    /// Regroups topics (`groups[old topic]` = group), then renumbers the groups by size
    /// (largest first, ties to the group holding the lowest old topic).
    fn apply_grouping(&mut self, groups: &[usize], n_groups: usize) {
        let mut size = vec![0usize; n_groups];
        let mut first = vec![usize::MAX; n_groups];
        for (old, &g) in groups.iter().enumerate() {
            size[g] += self.sizes[old + 1];
            first[g] = first[g].min(old);
        }
        let mut order: Vec<usize> = (0..n_groups).collect();
        order.sort_by_key(|&g| (std::cmp::Reverse(size[g]), first[g]));
        let mut rank = vec![0usize; n_groups];
        for (new, &g) in order.iter().enumerate() {
            rank[g] = new;
        }
        // Old class -> new class (outliers stay class 0).
        let class_map: Vec<usize> = std::iter::once(0)
            .chain(groups.iter().map(|&g| rank[g] + 1))
            .collect();
        let topic_map = |t: i64| {
            if t < 0 {
                -1
            } else {
                class_map[(t + 1) as usize] as i64 - 1
            }
        };
        self.counts.regroup(&class_map, n_groups + 1);
        let dim = self.umap.input_dim();
        let mut sizes = vec![0usize; n_groups + 1];
        let mut sums = vec![0f64; (n_groups + 1) * dim];
        for (old, &new) in class_map.iter().enumerate() {
            sizes[new] += self.sizes[old];
            for d in 0..dim {
                sums[new * dim + d] += self.embedding_sums[old * dim + d];
            }
        }
        self.sizes = sizes;
        self.embedding_sums = sums;
        self.cluster_topic
            .iter_mut()
            .for_each(|t| *t = topic_map(*t));
        self.doc_topics.iter_mut().for_each(|t| *t = topic_map(*t));
    }

    /// The brief's rule: the smallest topic (ties: the highest id) merges into its most
    /// c-TF-IDF-similar topic, until `target` remain; returns old topic -> group.
    fn smallest_into_most_similar(&self, target: usize) -> Vec<usize> {
        let t = self.n_topics();
        let mut group: Vec<usize> = (0..t).collect();
        let mut counts = self.counts.clone();
        let mut sizes = self.sizes.clone();
        let mut alive: Vec<bool> = vec![true; t];
        let mut n_alive = t;
        while n_alive > target {
            let present: Vec<bool> = sizes.iter().map(|&s| s > 0).collect();
            let c = Ctfidf::fit(&counts, &self.params.ctfidf, &present);
            let Some(smallest) = (0..t)
                .filter(|&g| alive[g])
                .min_by_key(|&g| (sizes[g + 1], std::cmp::Reverse(g)))
            else {
                break;
            };
            let into = (0..t)
                .filter(|&g| alive[g] && g != smallest)
                .map(|g| {
                    (
                        g,
                        ctfidf::sparse_cosine(&c.rows[smallest + 1], &c.rows[g + 1]),
                    )
                })
                .fold(None, |best: Option<(usize, f64)>, (g, s)| match best {
                    Some((_, b)) if b >= s => best,
                    _ => Some((g, s)),
                });
            let Some((into, _)) = into else { break };
            let map: Vec<usize> = (0..=t)
                .map(|c| if c == smallest + 1 { into + 1 } else { c })
                .collect();
            counts.regroup(&map, t + 1);
            sizes[into + 1] += sizes[smallest + 1];
            sizes[smallest + 1] = 0;
            alive[smallest] = false;
            n_alive -= 1;
            group
                .iter_mut()
                .filter(|g| **g == smallest)
                .for_each(|g| *g = into);
        }
        // Compact the surviving group ids to 0..n.
        let mut ids = vec![usize::MAX; t];
        let mut next = 0;
        group
            .iter()
            .map(|&g| {
                if ids[g] == usize::MAX {
                    ids[g] = next;
                    next += 1;
                }
                ids[g]
            })
            .collect()
    }

    /// New topics for the outlier documents among `topics` (BERTopic's `reduce_outliers`);
    /// the others keep theirs. `embeddings` is needed for [`OutlierStrategy::Embeddings`].
    pub fn reduce_outliers<S: AsRef<str>>(
        &self,
        texts: &[S],
        embeddings: Option<&Matrix>,
        topics: &[i64],
        strategy: OutlierStrategy,
        threshold: f64,
    ) -> Result<Vec<i64>, TopicError> {
        if texts.len() != topics.len() {
            return Err(TopicError::InvalidInput(format!(
                "{} texts for {} topics",
                texts.len(),
                topics.len()
            )));
        }
        let t = self.n_topics();
        let emb = match strategy {
            OutlierStrategy::Embeddings => {
                let e = embeddings.ok_or_else(|| {
                    TopicError::InvalidInput("the embeddings strategy needs the embeddings".into())
                })?;
                check_docs(texts, e)?;
                if e.cols() != self.umap.input_dim() {
                    return Err(TopicError::InvalidInput(format!(
                        "embeddings have {} columns, the model {}",
                        e.cols(),
                        self.umap.input_dim()
                    )));
                }
                Some((e, self.topic_embeddings()))
            }
            OutlierStrategy::CTfIdf => None,
        };
        let mut out = topics.to_vec();
        for (i, topic) in out.iter_mut().enumerate() {
            if *topic != -1 {
                continue;
            }
            let sims: Vec<f64> = match &emb {
                Some((e, topics_emb)) => (1..=t)
                    .map(|c| ctfidf::cosine(e.row(i), topics_emb.row(c)))
                    .collect(),
                None => {
                    // The raw text through the vectorizer (BERTopic does not preprocess here).
                    let mut bag = std::collections::BTreeMap::new();
                    for tok in tokenize(texts[i].as_ref(), self.params.vectorizer.stop_words) {
                        if let Some(w) = self.counts.word_index(&tok) {
                            *bag.entry(w).or_insert(0u64) += 1;
                        }
                    }
                    let row = self.ctfidf.transform_counts(&bag);
                    (1..=t)
                        .map(|c| ctfidf::sparse_cosine(&row, &self.ctfidf.rows[c]))
                        .collect()
                }
            };
            let sims: Vec<f64> = sims
                .into_iter()
                .map(|s| if s < threshold { 0.0 } else { s })
                .collect();
            if sims.iter().sum::<f64>() > 0.0 {
                let best = sims
                    .iter()
                    .enumerate()
                    .fold(0, |b, (j, &s)| if s > sims[b] { j } else { b });
                *topic = best as i64;
            }
        }
        Ok(out)
    }

    /// Reassigns the training documents to `topics` (e.g. from
    /// [`TopicModel::reduce_outliers`]) and recomputes sizes, counts, c-TF-IDF, keywords and,
    /// when `embeddings` are given, the topic embeddings (BERTopic's `update_topics`). Topic
    /// ids are kept; `transform` is unchanged.
    pub fn update_topics<S: AsRef<str>>(
        &mut self,
        texts: &[S],
        embeddings: &Matrix,
        topics: &[i64],
        embedder: Option<&dyn KeywordEmbedder>,
    ) -> Result<(), TopicError> {
        check_docs(texts, embeddings)?;
        let t = self.n_topics() as i64;
        if topics.len() != texts.len() || topics.iter().any(|&x| x < -1 || x >= t) {
            return Err(TopicError::InvalidInput(format!(
                "topics must be one per text within -1..{t}"
            )));
        }
        self.counts = ClassCounts::new(self.sizes.len());
        self.sizes = vec![0; self.sizes.len()];
        self.embedding_sums.iter_mut().for_each(|v| *v = 0.0);
        self.add_documents(texts, embeddings, topics);
        self.doc_topics = topics.to_vec();
        self.refresh(embedder)
    }

    /// Assigns new documents with `transform` and adds them to their topics (see the module
    /// doc); returns their topics and probabilities.
    pub fn partial_fit<S: AsRef<str>>(
        &mut self,
        texts: &[S],
        embeddings: &Matrix,
        embedder: Option<&dyn KeywordEmbedder>,
    ) -> Result<(Vec<i64>, Vec<f32>), TopicError> {
        check_docs(texts, embeddings)?;
        let (topics, probs) = self.transform(Some(texts), embeddings)?;
        self.add_documents(texts, embeddings, &topics);
        self.refresh(embedder)?;
        Ok((topics, probs))
    }
}

/// A document's tokens as the vectorizer takes them (BERTopic's preprocessing first when
/// `ascii_preprocessing`).
fn document_tokens(vectorizer: &VectorizerParams, text: &str) -> Vec<String> {
    if vectorizer.ascii_preprocessing {
        tokenize(&preprocess(text), vectorizer.stop_words)
    } else {
        tokenize(text, vectorizer.stop_words)
    }
}

/// Each document's words as indices into `vocabulary`, which takes new words in document
/// order (the order counting them one by one gives). The texts are tokenised in parallel,
/// [`TOKENIZE_CHUNK`] at a time.
fn intern_documents(
    texts: &[&str],
    vectorizer: &VectorizerParams,
    vocabulary: &mut ClassCounts,
) -> Vec<Vec<u32>> {
    use rayon::prelude::*;
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(TOKENIZE_CHUNK) {
        let tokens: Vec<Vec<String>> = chunk
            .par_iter()
            .map(|t| document_tokens(vectorizer, t))
            .collect();
        out.extend(tokens.into_iter().map(|doc| vocabulary.intern_all(doc)));
    }
    out
}

/// Average-linkage agglomerative clustering of `rows` under cosine distance into `k`
/// groups (scikit-learn's `AgglomerativeClustering(linkage="average")` on `1 - cos`); the
/// closest pair merges first, ties to the lowest indices. Returns row -> group (0..k, in
/// order of first row).
fn average_linkage(rows: &[&[f32]], k: usize) -> Vec<usize> {
    let n = rows.len();
    let mut d = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            d[i * n + j] = if i == j {
                0.0
            } else {
                1.0 - ctfidf::cosine(rows[i], rows[j])
            };
        }
    }
    let mut members: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    let mut alive: Vec<bool> = vec![true; n];
    let mut n_alive = n;
    while n_alive > k.max(1) {
        let mut best = (f64::INFINITY, 0, 0);
        for a in (0..n).filter(|&a| alive[a]) {
            for b in (a + 1..n).filter(|&b| alive[b]) {
                if d[a * n + b] < best.0 {
                    best = (d[a * n + b], a, b);
                }
            }
        }
        let (_, a, b) = best;
        // Average linkage: the distance to the union is the size-weighted mean.
        let (na, nb) = (members[a].len() as f64, members[b].len() as f64);
        for c in (0..n).filter(|&c| alive[c] && c != a && c != b) {
            let v = (na * d[a * n + c] + nb * d[b * n + c]) / (na + nb);
            d[a * n + c] = v;
            d[c * n + a] = v;
        }
        let moved = std::mem::take(&mut members[b]);
        members[a].extend(moved);
        alive[b] = false;
        n_alive -= 1;
    }
    let mut group = vec![0usize; n];
    for (g, m) in members.iter().filter(|m| !m.is_empty()).enumerate() {
        for &i in m {
            group[i] = g;
        }
    }
    group
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn average_linkage_joins_the_nearest_directions() {
        let rows: Vec<Vec<f32>> = vec![
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![0.9, 0.1],
            vec![0.1, 0.9],
            vec![-1.0, 0.0],
        ];
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        assert_eq!(average_linkage(&refs, 3), vec![0, 1, 0, 1, 2]);
        assert_eq!(average_linkage(&refs, 5), vec![0, 1, 2, 3, 4]);
    }
}
