//! The saved topic model: a folder with `topics.json` (metadata) and `topics.safetensors`
//! (the arrays, little-endian). No pickle; every count is checked against [`LoadLimits`]
//! before anything is built from it, every array's dtype and shape against the metadata, and
//! the HDBSCAN tree's structure before it is walked, so a truncated, hostile or corrupt
//! artifact is refused with its reason.
//!
//! `topics.json`:
//!
//! ```json
//! {
//!   "format": "infermesh-topics", "version": 1,
//!   "params": { "umap": {...}, "hdbscan": {...}, "vectorizer": {...}, "ctfidf": {...},
//!               "nr_topics": null, "merge": "agglomerative" },
//!   "n_train": 1000, "input_dim": 384, "n_classes": 12, "n_clusters": 11,
//!   "n_tree_rows": 1010, "n_counts": 5000, "min_samples": 10,
//!   "vocabulary": ["word", ...],
//!   "topics": [{"id": -1, "size": 40, "keywords": [["word", 0.12], ...], "label": "-1_word_..."}, ...]
//! }
//! ```
//!
//! `topics.safetensors` (N = `n_train`, D = `input_dim`, C = `params.umap.n_components`,
//! K = `n_clusters`, R = `n_tree_rows`, T = `n_classes` (topics + the outlier class 0),
//! E = `n_counts`):
//!
//! | tensor | dtype | shape | what |
//! |---|---|---|---|
//! | `umap.train` | F32 | [N, D] | training rows as the metric reads them (unit rows for cosine) |
//! | `umap.embedding` | F32 | [N, C] | their layout (also HDBSCAN's points) |
//! | `umap.ab` | F32 | [2] | `a`, `b` of the layout's curve |
//! | `hdbscan.core`, `hdbscan.predict_core` | F64 | [N] | core distances (clustering's, prediction's) |
//! | `hdbscan.tree.parent`, `.child`, `.size` | I64 | [R] | condensed tree |
//! | `hdbscan.tree.lambda` | F64 | [R] | condensed tree lambdas |
//! | `hdbscan.selected` | I64 | [K] | selected clusters (label i = selected[i]) |
//! | `topics.cluster_topic` | I64 | [K] | HDBSCAN label -> topic id |
//! | `topics.doc_topics` | I64 | [N] | training documents' topics |
//! | `topics.doc_probabilities` | F32 | [N] | their probabilities |
//! | `topics.sizes` | I64 | [T] | documents per class (class t + 1 = topic t) |
//! | `topics.embedding_sums` | F64 | [T, D] | sum of each class's document embeddings |
//! | `ctfidf.class`, `ctfidf.word`, `ctfidf.count` | I64 | [E] | word counts per class |
//!
//! The c-TF-IDF is recomputed from the counts at load (deterministic); the keywords are
//! read as saved (MMR may have used an embedder the loader does not have). Everything
//! `transform` reads is stored bit for bit, so `transform` after `load` is bit-identical.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::TopicError;
use crate::ctfidf::{ClassCounts, Ctfidf};
use crate::hdbscan::{Hdbscan, TreeRow};
use crate::model::{TopicInfo, TopicModel, TopicParams};
use crate::umap::Umap;

/// The metadata file.
pub const META_FILE: &str = "topics.json";
/// The arrays file.
pub const TENSORS_FILE: &str = "topics.safetensors";
/// The `format` the metadata declares.
pub const FORMAT: &str = "infermesh-topics";

/// Bounds on what loading may take (every field optional in a config, unknown keys refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadLimits {
    /// Largest `topics.safetensors`. Default 4 GiB.
    pub max_file_bytes: u64,
    /// Largest `topics.json`. Default 256 MiB.
    pub max_meta_bytes: u64,
    /// Most training rows. Default 1,000,000.
    pub max_rows: usize,
    /// Most input dimensions (and layout components). Default 8,192.
    pub max_dims: usize,
    /// Most topics. Default 100,000.
    pub max_topics: usize,
    /// Most vocabulary words. Default 10,000,000.
    pub max_vocabulary: usize,
    /// Most non-zero word counts over all topics. Default 100,000,000.
    pub max_counts: usize,
}

impl Default for LoadLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 4 << 30,
            max_meta_bytes: 256 << 20,
            max_rows: 1_000_000,
            max_dims: 8_192,
            max_topics: 100_000,
            max_vocabulary: 10_000_000,
            max_counts: 100_000_000,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format: String,
    version: u32,
    params: TopicParams,
    n_train: usize,
    input_dim: usize,
    n_classes: usize,
    n_clusters: usize,
    n_tree_rows: usize,
    n_counts: usize,
    min_samples: usize,
    vocabulary: Vec<String>,
    topics: Vec<TopicInfo>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TopicError + '_ {
    move |source| TopicError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn le<T: Copy, const W: usize>(values: &[T], to: impl Fn(T) -> [u8; W]) -> Vec<u8> {
    values.iter().flat_map(|&v| to(v)).collect()
}

impl TopicModel {
    /// Writes the model into `dir` (created if missing): `topics.json` and
    /// `topics.safetensors` (see [`crate::artifact`]).
    pub fn save(&self, dir: &Path) -> Result<(), TopicError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let h = &self.hdbscan;
        let tree = h.condensed_tree();
        let n = self.umap.n_train();
        let (core, predict_core) = h.core_distances();
        let mut class = Vec::new();
        let mut word = Vec::new();
        let mut count = Vec::new();
        for (c, row) in self.counts.counts().iter().enumerate() {
            for (&w, &k) in row {
                class.push(c as i64);
                word.push(i64::from(w));
                count.push(k as i64);
            }
        }
        let meta = Meta {
            format: FORMAT.into(),
            version: 1,
            params: self.params.clone(),
            n_train: n,
            input_dim: self.umap.input_dim(),
            n_classes: self.sizes.len(),
            n_clusters: h.n_clusters(),
            n_tree_rows: tree.len(),
            n_counts: class.len(),
            min_samples: h.min_samples(),
            vocabulary: self.counts.words().to_vec(),
            topics: self.topics.clone(),
        };
        let (a, b) = self.umap.ab();
        let i64s = |v: Vec<i64>| le(&v, i64::to_le_bytes);
        let usizes = |v: &[usize]| {
            le(
                &v.iter().map(|&x| x as i64).collect::<Vec<_>>(),
                i64::to_le_bytes,
            )
        };
        let tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
            (
                "umap.train",
                Dtype::F32,
                vec![n, self.umap.input_dim()],
                le(self.umap.train_rows(), f32::to_le_bytes),
            ),
            (
                "umap.embedding",
                Dtype::F32,
                vec![n, self.params.umap.n_components],
                le(self.umap.embedding_slice(), f32::to_le_bytes),
            ),
            (
                "umap.ab",
                Dtype::F32,
                vec![2],
                le(&[a, b], f32::to_le_bytes),
            ),
            (
                "hdbscan.core",
                Dtype::F64,
                vec![n],
                le(core, f64::to_le_bytes),
            ),
            (
                "hdbscan.predict_core",
                Dtype::F64,
                vec![n],
                le(predict_core, f64::to_le_bytes),
            ),
            (
                "hdbscan.tree.parent",
                Dtype::I64,
                vec![tree.len()],
                usizes(&tree.iter().map(|r| r.parent).collect::<Vec<_>>()),
            ),
            (
                "hdbscan.tree.child",
                Dtype::I64,
                vec![tree.len()],
                usizes(&tree.iter().map(|r| r.child).collect::<Vec<_>>()),
            ),
            (
                "hdbscan.tree.size",
                Dtype::I64,
                vec![tree.len()],
                usizes(&tree.iter().map(|r| r.size).collect::<Vec<_>>()),
            ),
            (
                "hdbscan.tree.lambda",
                Dtype::F64,
                vec![tree.len()],
                le(
                    &tree.iter().map(|r| r.lambda).collect::<Vec<_>>(),
                    f64::to_le_bytes,
                ),
            ),
            (
                "hdbscan.selected",
                Dtype::I64,
                vec![h.n_clusters()],
                usizes(h.selected()),
            ),
            (
                "topics.cluster_topic",
                Dtype::I64,
                vec![h.n_clusters()],
                i64s(self.cluster_topic.clone()),
            ),
            (
                "topics.doc_topics",
                Dtype::I64,
                vec![self.doc_topics.len()],
                i64s(self.doc_topics.clone()),
            ),
            (
                "topics.doc_probabilities",
                Dtype::F32,
                vec![self.doc_probabilities.len()],
                le(&self.doc_probabilities, f32::to_le_bytes),
            ),
            (
                "topics.sizes",
                Dtype::I64,
                vec![self.sizes.len()],
                usizes(&self.sizes),
            ),
            (
                "topics.embedding_sums",
                Dtype::F64,
                vec![self.sizes.len(), self.umap.input_dim()],
                le(&self.embedding_sums, f64::to_le_bytes),
            ),
            ("ctfidf.class", Dtype::I64, vec![class.len()], i64s(class)),
            ("ctfidf.word", Dtype::I64, vec![word.len()], i64s(word)),
            ("ctfidf.count", Dtype::I64, vec![count.len()], i64s(count)),
        ];
        let views = tensors
            .iter()
            .map(|(name, dtype, shape, data)| {
                TensorView::new(*dtype, shape.clone(), data)
                    .map(|v| (name.to_string(), v))
                    .map_err(|e| TopicError::Invalid(format!("{name}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bytes = safetensors::serialize(views, None)
            .map_err(|e| TopicError::Invalid(format!("serialising the arrays: {e}")))?;
        let tensors_path = dir.join(TENSORS_FILE);
        std::fs::write(&tensors_path, bytes).map_err(io(&tensors_path))?;
        let meta_path = dir.join(META_FILE);
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| TopicError::Invalid(format!("serialising the metadata: {e}")))?;
        std::fs::write(&meta_path, json).map_err(io(&meta_path))
    }

    /// Loads a model saved by [`TopicModel::save`] within `limits`.
    pub fn load(dir: &Path, limits: &LoadLimits) -> Result<Self, TopicError> {
        let read = |name: &str, max: u64| -> Result<Vec<u8>, TopicError> {
            let path = dir.join(name);
            let len = std::fs::metadata(&path).map_err(io(&path))?.len();
            if len > max {
                return Err(TopicError::Invalid(format!(
                    "{name} is {len} bytes, more than the limit ({max})"
                )));
            }
            std::fs::read(&path).map_err(io(&path))
        };
        let meta = read(META_FILE, limits.max_meta_bytes)?;
        let tensors = read(TENSORS_FILE, limits.max_file_bytes)?;
        Self::from_bytes(&meta, &tensors, limits)
    }

    /// [`TopicModel::load`] from the two files' bytes.
    pub fn from_bytes(
        meta: &[u8],
        tensors: &[u8],
        limits: &LoadLimits,
    ) -> Result<Self, TopicError> {
        from_bytes(meta, tensors, limits).map_err(TopicError::Invalid)
    }
}

fn within(what: &str, value: usize, lo: usize, hi: usize, limit: &str) -> Result<(), String> {
    if value < lo || value > hi {
        return Err(format!(
            "{what} = {value} is not within {lo}..={hi} ({limit})"
        ));
    }
    Ok(())
}

/// Reads a tensor of `dtype` and exactly `shape`, decoding each `W`-byte value with `from`.
fn tensor<T, const W: usize>(
    st: &SafeTensors<'_>,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    from: impl Fn([u8; W]) -> T,
) -> Result<Vec<T>, String> {
    let t = st.tensor(name).map_err(|e| format!("{name}: {e}"))?;
    if t.dtype() != dtype || t.shape() != shape {
        return Err(format!(
            "{name} is {:?} {:?}, expected {dtype:?} {shape:?}",
            t.dtype(),
            t.shape()
        ));
    }
    let data = t.data();
    let expected = shape.iter().try_fold(W, |acc, &d| acc.checked_mul(d));
    if expected != Some(data.len()) {
        return Err(format!(
            "{name} holds {} bytes for shape {shape:?}",
            data.len()
        ));
    }
    Ok(data
        .chunks_exact(W)
        .map(|c| {
            let mut b = [0u8; W];
            b.copy_from_slice(c);
            from(b)
        })
        .collect())
}

fn to_usize(name: &str, v: Vec<i64>, below: usize) -> Result<Vec<usize>, String> {
    v.into_iter()
        .map(|x| {
            usize::try_from(x)
                .ok()
                .filter(|&x| x < below)
                .ok_or_else(|| format!("{name}: {x} is not within 0..{below}"))
        })
        .collect()
}

fn from_bytes(meta: &[u8], tensors: &[u8], limits: &LoadLimits) -> Result<TopicModel, String> {
    // serde_json bounds nesting, and every array is as long as the bytes that hold it.
    let meta: Meta = serde_json::from_slice(meta).map_err(|e| format!("{META_FILE}: {e}"))?;
    if meta.format != FORMAT || meta.version != 1 {
        return Err(format!(
            "format {:?} version {} is not {FORMAT:?} version 1",
            meta.format, meta.version
        ));
    }
    let n = meta.n_train;
    let d = meta.input_dim;
    let c = meta.params.umap.n_components;
    within("n_train", n, 2, limits.max_rows, "max_rows")?;
    within("input_dim", d, 1, limits.max_dims, "max_dims")?;
    within("n_components", c, 1, limits.max_dims, "max_dims")?;
    within(
        "n_classes",
        meta.n_classes,
        1,
        limits.max_topics.saturating_add(1),
        "max_topics",
    )?;
    within("n_clusters", meta.n_clusters, 0, n, "n_train")?;
    within("n_tree_rows", meta.n_tree_rows, n, 2 * n, "twice n_train")?;
    within(
        "vocabulary",
        meta.vocabulary.len(),
        0,
        limits.max_vocabulary,
        "max_vocabulary",
    )?;
    within(
        "n_counts",
        meta.n_counts,
        0,
        limits.max_counts,
        "max_counts",
    )?;
    within("min_samples", meta.min_samples, 1, n - 1, "n_train - 1")?;
    meta.params.umap.check().map_err(|e| e.to_string())?;
    meta.params.hdbscan.check().map_err(|e| e.to_string())?;
    // n x d and the others fit in memory only if the file holds them: the shape checks below
    // compare against the bytes present before anything of that size is allocated.
    let st = SafeTensors::deserialize(tensors).map_err(|e| format!("{TENSORS_FILE}: {e}"))?;
    let f32le = f32::from_le_bytes;
    let f64le = f64::from_le_bytes;
    let i64le = i64::from_le_bytes;
    let (r, k, t, e) = (
        meta.n_tree_rows,
        meta.n_clusters,
        meta.n_classes,
        meta.n_counts,
    );
    let train = tensor(&st, "umap.train", Dtype::F32, &[n, d], f32le)?;
    let embedding = tensor(&st, "umap.embedding", Dtype::F32, &[n, c], f32le)?;
    let ab = tensor(&st, "umap.ab", Dtype::F32, &[2], f32le)?;
    let umap = Umap::from_parts(meta.params.umap.clone(), ab[0], ab[1], d, train, embedding)
        .map_err(|m| format!("umap: {m}"))?;
    let core = tensor(&st, "hdbscan.core", Dtype::F64, &[n], f64le)?;
    let predict_core = tensor(&st, "hdbscan.predict_core", Dtype::F64, &[n], f64le)?;
    // Condensed-tree ids: points below n, clusters n..2n (Hdbscan::from_parts checks the rest).
    let ids = 2 * n + 1;
    let parent = to_usize(
        "hdbscan.tree.parent",
        tensor(&st, "hdbscan.tree.parent", Dtype::I64, &[r], i64le)?,
        ids,
    )?;
    let child = to_usize(
        "hdbscan.tree.child",
        tensor(&st, "hdbscan.tree.child", Dtype::I64, &[r], i64le)?,
        ids,
    )?;
    let size = to_usize(
        "hdbscan.tree.size",
        tensor(&st, "hdbscan.tree.size", Dtype::I64, &[r], i64le)?,
        n + 1,
    )?;
    let lambda = tensor(&st, "hdbscan.tree.lambda", Dtype::F64, &[r], f64le)?;
    let selected = to_usize(
        "hdbscan.selected",
        tensor(&st, "hdbscan.selected", Dtype::I64, &[k], i64le)?,
        ids,
    )?;
    let tree: Vec<TreeRow> = (0..r)
        .map(|i| TreeRow {
            parent: parent[i],
            child: child[i],
            lambda: lambda[i],
            size: size[i],
        })
        .collect();
    let points: Vec<f64> = umap
        .embedding_slice()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let hdbscan = Hdbscan::from_parts(
        meta.min_samples,
        c,
        points,
        core,
        predict_core,
        tree,
        selected,
    )
    .map_err(|m| format!("hdbscan: {m}"))?;
    if hdbscan.n_clusters() != k {
        return Err(format!(
            "hdbscan.selected names {} distinct clusters, n_clusters is {k}",
            hdbscan.n_clusters()
        ));
    }
    let n_topics = t as i64 - 1;
    let in_topics = |name: &str, v: &[i64]| -> Result<(), String> {
        match v.iter().find(|&&x| x < -1 || x >= n_topics) {
            Some(x) => Err(format!("{name}: topic {x} is not within -1..{n_topics}")),
            None => Ok(()),
        }
    };
    let cluster_topic = tensor(&st, "topics.cluster_topic", Dtype::I64, &[k], i64le)?;
    in_topics("topics.cluster_topic", &cluster_topic)?;
    let doc_topics = tensor(&st, "topics.doc_topics", Dtype::I64, &[n], i64le)?;
    in_topics("topics.doc_topics", &doc_topics)?;
    let doc_probabilities = tensor(&st, "topics.doc_probabilities", Dtype::F32, &[n], f32le)?;
    let sizes = to_usize(
        "topics.sizes",
        tensor(&st, "topics.sizes", Dtype::I64, &[t], i64le)?,
        usize::MAX,
    )?;
    let embedding_sums = tensor(&st, "topics.embedding_sums", Dtype::F64, &[t, d], f64le)?;
    if embedding_sums.iter().any(|v| !v.is_finite()) {
        return Err("topics.embedding_sums is not finite".into());
    }
    let v = meta.vocabulary.len();
    let class = to_usize(
        "ctfidf.class",
        tensor(&st, "ctfidf.class", Dtype::I64, &[e], i64le)?,
        t,
    )?;
    let word = to_usize(
        "ctfidf.word",
        tensor(&st, "ctfidf.word", Dtype::I64, &[e], i64le)?,
        v,
    )?;
    let count = tensor(&st, "ctfidf.count", Dtype::I64, &[e], i64le)?;
    let mut per_class = vec![BTreeMap::new(); t];
    for i in 0..e {
        let k = u64::try_from(count[i])
            .ok()
            .filter(|&k| k > 0)
            .ok_or_else(|| format!("ctfidf.count: {} is not a positive count", count[i]))?;
        if per_class[class[i]].insert(word[i] as u32, k).is_some() {
            return Err(format!(
                "ctfidf: class {} counts word {} twice",
                class[i], word[i]
            ));
        }
    }
    let counts = ClassCounts::from_parts(meta.vocabulary, per_class)?;
    let present: Vec<bool> = sizes.iter().map(|&s| s > 0).collect();
    let ctfidf = Ctfidf::fit(&counts, &meta.params.ctfidf, &present);
    let expected_ids: Vec<i64> = (0..t)
        .filter(|&cl| cl > 0 || sizes[0] > 0)
        .map(|cl| cl as i64 - 1)
        .collect();
    if meta.topics.iter().map(|ti| ti.id).collect::<Vec<_>>() != expected_ids {
        return Err(format!(
            "topics must list the ids {expected_ids:?} in order"
        ));
    }
    if let Some(ti) = meta
        .topics
        .iter()
        .find(|ti| ti.size != sizes[(ti.id + 1) as usize])
    {
        return Err(format!(
            "topic {} has size {}, topics.sizes says {}",
            ti.id,
            ti.size,
            sizes[(ti.id + 1) as usize]
        ));
    }
    Ok(TopicModel {
        params: meta.params,
        umap,
        hdbscan,
        cluster_topic,
        counts,
        sizes,
        embedding_sums,
        doc_topics,
        doc_probabilities,
        ctfidf,
        topics: meta.topics,
    })
}
