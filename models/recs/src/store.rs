//! A model version on disk: `recs.json` (format, hyper-parameters, blend, ids and feature
//! names) and `model.safetensors` (embeddings, biases, the feature matrices, the training
//! interactions, popularity and the content vectors as CSR triples).

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::RecsError;

/// Load limits of a recommender, from the `[limits]` section of its `config.toml`; missing
/// fields keep their defaults and unknown fields are an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecsLoadLimits {
    /// Largest `recs.json` or `model.safetensors`, in bytes, checked from the file's metadata
    /// before it is read (both are read whole). Default 4 GiB: 10 M items x 64 components of
    /// f32 factors are 2.6 GB.
    pub max_file_bytes: u64,
}

impl Default for RecsLoadLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 4 << 30,
        }
    }
}

impl RecsLoadLimits {
    fn check(&self, path: &Path) -> Result<(), RecsError> {
        let len = std::fs::metadata(path)
            .map_err(|e| RecsError::io(path, e))?
            .len();
        if len > self.max_file_bytes {
            return Err(RecsError::Load(format!(
                "{} is {len} bytes, over the limit max_file_bytes = {}",
                path.display(),
                self.max_file_bytes
            )));
        }
        Ok(())
    }
}
use crate::content::Content;
use crate::data::{Csr, Features, IdMap};
use crate::model::{Factors, Hyper};

/// The `format` field of `recs.json`.
pub const FORMAT: &str = "infermesh-recs";
/// The `format_version` this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The metadata file.
pub const META_FILE: &str = "recs.json";
/// The tensors file.
pub const TENSORS_FILE: &str = "model.safetensors";

/// How collaborative and content scores mix, and what recent items do.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blend {
    /// Weight of the standardised collaborative score. Default 1.
    #[serde(default = "one")]
    pub cf_weight: f32,
    /// Weight of the standardised content score (0: collaborative only). Default 0.3
    /// when the model has item texts, else 0.
    #[serde(default)]
    pub content_weight: f32,
    /// Weight of a recent item in the content profile (history items weigh 1). Default 2.
    #[serde(default = "two")]
    pub recent_weight: f32,
    /// With recent-items boost: added to a recent item's score, in standard deviations of
    /// the user's scores. Default 1.
    #[serde(default = "one")]
    pub recent_boost: f32,
}

fn one() -> f32 {
    1.0
}
fn two() -> f32 {
    2.0
}

impl Default for Blend {
    fn default() -> Self {
        Self {
            cf_weight: 1.0,
            content_weight: 0.0,
            recent_weight: 2.0,
            recent_boost: 1.0,
        }
    }
}

impl Blend {
    /// Checks that the weights are finite and not negative.
    pub fn check(&self) -> Result<(), RecsError> {
        let all = [
            self.cf_weight,
            self.content_weight,
            self.recent_weight,
            self.recent_boost,
        ];
        if all.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err(RecsError::Invalid(
                "blend weights must be finite and >= 0".into(),
            ));
        }
        if self.cf_weight == 0.0 && self.content_weight == 0.0 {
            return Err(RecsError::Invalid(
                "cf_weight and content_weight cannot both be 0".into(),
            ));
        }
        Ok(())
    }
}

/// Facts about the training run, kept with the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    /// Epochs run.
    pub epochs: usize,
    /// Threads used.
    pub threads: usize,
    /// Positive interactions trained on.
    pub positives: usize,
    /// Stored interactions (positives and known negatives).
    pub interactions: usize,
    /// Wall time of the fit in seconds.
    pub fit_seconds: f64,
    /// Vocabulary size of the item texts (0 without texts).
    pub vocabulary: usize,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format: String,
    format_version: u32,
    hyper: Hyper,
    blend: Blend,
    training: TrainingInfo,
    users: Vec<String>,
    items: Vec<String>,
    user_identity: bool,
    item_identity: bool,
    user_side_features: Vec<String>,
    item_side_features: Vec<String>,
}

/// Everything a model version holds.
#[derive(Debug, Clone, PartialEq)]
pub struct RecsArtifact {
    /// Hyper-parameters it was trained with.
    pub hyper: Hyper,
    /// Default blend (config can override).
    pub blend: Blend,
    /// About the run.
    pub training: TrainingInfo,
    /// User ids.
    pub users: IdMap,
    /// Item ids.
    pub items: IdMap,
    /// User feature matrix and names.
    pub user_features: Features,
    /// Item feature matrix and names.
    pub item_features: Features,
    /// Trained embeddings and biases.
    pub factors: Factors,
    /// Users x items, the training positives ("seen").
    pub seen: Csr,
    /// Positive interactions per item.
    pub popularity: Vec<f32>,
    /// Item TF-IDF vectors, when item texts were given.
    pub content: Option<Content>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl RecsArtifact {
    /// Writes `recs.json` and `model.safetensors` into `dir` (created when missing).
    pub fn save(&self, dir: &Path) -> Result<(), RecsError> {
        std::fs::create_dir_all(dir).map_err(|e| RecsError::io(dir, e))?;
        let meta = Meta {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            hyper: self.hyper,
            blend: self.blend,
            training: self.training.clone(),
            users: self.users.ids().to_vec(),
            items: self.items.ids().to_vec(),
            user_identity: self.user_features.identity,
            item_identity: self.item_features.identity,
            user_side_features: self.user_features.side.ids().to_vec(),
            item_side_features: self.item_features.side.ids().to_vec(),
        };
        let k = self.factors.components;
        let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![
            (
                "user_embeddings".into(),
                Dtype::F32,
                vec![self.factors.user_biases.len(), k],
                f32_bytes(&self.factors.user_embeddings),
            ),
            (
                "user_biases".into(),
                Dtype::F32,
                vec![self.factors.user_biases.len()],
                f32_bytes(&self.factors.user_biases),
            ),
            (
                "item_embeddings".into(),
                Dtype::F32,
                vec![self.factors.item_biases.len(), k],
                f32_bytes(&self.factors.item_embeddings),
            ),
            (
                "item_biases".into(),
                Dtype::F32,
                vec![self.factors.item_biases.len()],
                f32_bytes(&self.factors.item_biases),
            ),
            (
                "popularity".into(),
                Dtype::F32,
                vec![self.popularity.len()],
                f32_bytes(&self.popularity),
            ),
        ];
        let mut csr = |name: &str, m: &Csr| {
            owned.push((
                format!("{name}.indptr"),
                Dtype::U32,
                vec![m.indptr.len()],
                u32_bytes(&m.indptr),
            ));
            owned.push((
                format!("{name}.indices"),
                Dtype::U32,
                vec![m.indices.len()],
                u32_bytes(&m.indices),
            ));
            owned.push((
                format!("{name}.values"),
                Dtype::F32,
                vec![m.values.len()],
                f32_bytes(&m.values),
            ));
        };
        csr("user_features", &self.user_features.matrix);
        csr("item_features", &self.item_features.matrix);
        csr("seen", &self.seen);
        if let Some(c) = &self.content {
            csr("content", &c.vectors);
        }
        let mut info = HashMap::new();
        info.insert("format".to_string(), FORMAT.to_string());
        let mut cols: HashMap<String, String> = HashMap::new();
        cols.insert(
            "user_features".into(),
            self.user_features.matrix.cols.to_string(),
        );
        cols.insert(
            "item_features".into(),
            self.item_features.matrix.cols.to_string(),
        );
        cols.insert("seen".into(), self.seen.cols.to_string());
        if let Some(c) = &self.content {
            cols.insert("content".into(), c.vectors.cols.to_string());
        }
        for (name, n) in cols {
            info.insert(format!("{name}.cols"), n);
        }
        let views: Vec<(String, TensorView<'_>)> = owned
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| RecsError::Internal(format!("tensor {name}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let bytes = safetensors::serialize(views, Some(info))
            .map_err(|e| RecsError::Internal(format!("safetensors: {e}")))?;
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| RecsError::Internal(format!("recs.json: {e}")))?;
        write_atomic(&dir.join(TENSORS_FILE), &bytes)?;
        write_atomic(&dir.join(META_FILE), &json)
    }

    /// Reads and checks a version written by [`RecsArtifact::save`].
    pub fn load(dir: &Path) -> Result<Self, RecsError> {
        Self::load_with_limits(dir, &RecsLoadLimits::default())
    }

    /// As [`RecsArtifact::load`], refusing files past `limits` before reading them.
    pub fn load_with_limits(dir: &Path, limits: &RecsLoadLimits) -> Result<Self, RecsError> {
        let meta_path = dir.join(META_FILE);
        limits.check(&meta_path)?;
        limits.check(&dir.join(TENSORS_FILE))?;
        let json = std::fs::read(&meta_path).map_err(|e| RecsError::io(&meta_path, e))?;
        let meta: Meta = serde_json::from_slice(&json)
            .map_err(|e| RecsError::Load(format!("{}: {e}", meta_path.display())))?;
        if meta.format != FORMAT || meta.format_version != FORMAT_VERSION {
            return Err(RecsError::Load(format!(
                "{} is format {} v{}; this build reads {FORMAT} v{FORMAT_VERSION}",
                meta_path.display(),
                meta.format,
                meta.format_version
            )));
        }
        meta.hyper.check()?;
        meta.blend.check()?;
        let path = dir.join(TENSORS_FILE);
        let bytes = std::fs::read(&path).map_err(|e| RecsError::io(&path, e))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| RecsError::Load(format!("{}: {e}", path.display())))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| RecsError::Load(format!("{}: {e}", path.display())))?;
        let info = header.metadata().clone().unwrap_or_default();
        let cols = |name: &str| -> Result<usize, RecsError> {
            info.get(&format!("{name}.cols"))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| RecsError::Load(format!("{name}: column count missing")))
        };
        let csr = |name: &str| -> Result<Csr, RecsError> {
            let m = Csr {
                indptr: read_u32(&st, &format!("{name}.indptr"))?,
                indices: read_u32(&st, &format!("{name}.indices"))?,
                values: read_f32(&st, &format!("{name}.values"))?,
                cols: cols(name)?,
            };
            m.validate(name)?;
            Ok(m)
        };
        let users = IdMap::from_ids(meta.users)?;
        let items = IdMap::from_ids(meta.items)?;
        let features = |name: &str, identity: bool, side: Vec<String>, rows: usize| {
            let matrix = csr(name)?;
            let side = IdMap::from_ids(side)?;
            let expect = if identity { rows } else { 0 } + side.len();
            if matrix.rows() != rows || matrix.cols != expect {
                return Err(RecsError::Load(format!(
                    "{name} is {} x {}, expected {rows} x {expect}",
                    matrix.rows(),
                    matrix.cols
                )));
            }
            Ok(Features {
                matrix,
                identity,
                side,
            })
        };
        let user_features = features(
            "user_features",
            meta.user_identity,
            meta.user_side_features,
            users.len(),
        )?;
        let item_features = features(
            "item_features",
            meta.item_identity,
            meta.item_side_features,
            items.len(),
        )?;
        let factors = Factors {
            components: meta.hyper.components,
            user_embeddings: read_f32(&st, "user_embeddings")?,
            user_biases: read_f32(&st, "user_biases")?,
            item_embeddings: read_f32(&st, "item_embeddings")?,
            item_biases: read_f32(&st, "item_biases")?,
        };
        factors.check(user_features.len(), item_features.len())?;
        let seen = csr("seen")?;
        if seen.rows() != users.len() || seen.cols != items.len() {
            return Err(RecsError::Load("seen does not match the ids".into()));
        }
        let popularity = read_f32(&st, "popularity")?;
        if popularity.len() != items.len() {
            return Err(RecsError::Load(
                "popularity does not match the items".into(),
            ));
        }
        let content = if st.names().contains(&"content.indptr") {
            let vectors = csr("content")?;
            if vectors.rows() != items.len() {
                return Err(RecsError::Load("content does not match the items".into()));
            }
            Some(Content::from_vectors(vectors)?)
        } else {
            None
        };
        Ok(Self {
            hyper: meta.hyper,
            blend: meta.blend,
            training: meta.training,
            users,
            items,
            user_features,
            item_features,
            factors,
            seen,
            popularity,
            content,
        })
    }
}

fn tensor<'a>(
    st: &'a SafeTensors<'a>,
    name: &str,
    dtype: Dtype,
) -> Result<TensorView<'a>, RecsError> {
    let t = st
        .tensor(name)
        .map_err(|e| RecsError::Load(format!("tensor {name}: {e}")))?;
    if t.dtype() != dtype {
        return Err(RecsError::Load(format!(
            "tensor {name} is {:?}, expected {dtype:?}",
            t.dtype()
        )));
    }
    Ok(t)
}

fn read_f32(st: &SafeTensors<'_>, name: &str) -> Result<Vec<f32>, RecsError> {
    let t = tensor(st, name, Dtype::F32)?;
    let v: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if v.iter().any(|x| !x.is_finite()) {
        return Err(RecsError::Load(format!("tensor {name} holds NaN or inf")));
    }
    Ok(v)
}

fn read_u32(st: &SafeTensors<'_>, name: &str) -> Result<Vec<u32>, RecsError> {
    let t = tensor(st, name, Dtype::U32)?;
    Ok(t.data()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RecsError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| RecsError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RecsError::io(path, e))
}
