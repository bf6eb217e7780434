//! The fine-tuning loop: seeded init, AdamW with linear warmup and decay, class-weighted
//! cross-entropy, early stopping on validation macro-F1, and the Hugging Face output layout.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};
use indicatif::{ProgressBar, ProgressStyle};
use infermesh_text::classifier::{Architecture, ClassifierPooling, argmax};
use infermesh_text::tokenize;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::CategorizerError;
use super::data::{LabelledTexts, check_trainable, read_csv, stratified_split};
use super::encoder::{Activation, Dropout, EncoderSpec, TrainableClassifier};
use super::head::{PROTOTYPE_SCALE, probe_head, prototype_head};
use super::lexical::fit_head;
use super::metrics::score;
use super::params::{HeadInit, ModelInit, TrainConfig};
use infermesh_model_core::rng::SplitMix64;
use infermesh_text::lexical::{self, LexicalHead};

/// Scores after one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based epoch; 0 scores the linear probe before fine-tuning.
    pub epoch: usize,
    /// Mean weighted cross-entropy over the epoch's steps (epoch 0: the probe's objective).
    pub train_loss: f64,
    /// Validation accuracy.
    pub val_accuracy: f64,
    /// Validation macro-F1.
    pub val_macro_f1: f64,
}

/// What a run did; written as `training_report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingReport {
    /// `BertForSequenceClassification` or `DistilBertForSequenceClassification`.
    pub architecture: String,
    /// How the classifier layer started: `random`, `prototype` or `probe`.
    #[serde(default)]
    pub head_init: String,
    /// Fine-tuning epochs run (early stopping may end before the maximum).
    pub epochs_run: usize,
    /// The epoch whose weights were kept (1-based; 0: the linear probe alone, no
    /// fine-tuning).
    pub best_epoch: usize,
    /// Validation accuracy of the kept weights.
    pub validation_accuracy: f64,
    /// Validation macro-F1 of the kept weights.
    pub validation_macro_f1: f64,
    /// Rows per label in the whole file.
    pub label_counts: BTreeMap<String, usize>,
    /// Training rows.
    pub train_rows: usize,
    /// Validation rows.
    pub validation_rows: usize,
    /// With refit: the rows (training + validation) the kept model was trained on.
    #[serde(default)]
    pub refit_rows: Option<usize>,
    /// The seed.
    pub seed: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Wall time of the run, seconds.
    pub elapsed_seconds: f64,
    /// Per-epoch scores.
    pub history: Vec<EpochStats>,
    /// With `--soup N`: every member's run (the fields above describe the first); the
    /// written weights are their uniform average.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub soup: Vec<SoupMember>,
    /// With `--lexical-weight`: the lexical head and what it adds on validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical: Option<LexicalReport>,
}

/// The lexical head of a run (`--lexical-weight`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LexicalReport {
    /// Its weight in the blend.
    pub blend_weight: f32,
    /// scikit-learn's `C` of its regression.
    pub c: f64,
    /// Features (TF-IDF terms) of the written head.
    pub features: usize,
    /// Rows the written head was fitted on (those of the kept classifier).
    pub rows: usize,
    /// Validation macro-F1 of a head fitted on the training split alone.
    pub validation_macro_f1_lexical: f64,
    /// Validation macro-F1 of the kept classifier blended with that head (the classifier
    /// alone scored `validation_macro_f1`).
    pub validation_macro_f1_blend: f64,
}

/// One member of a model soup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoupMember {
    /// Its seed (split and shuffles; every member starts from the first one's weights).
    pub seed: u64,
    /// The epoch its validation chose.
    pub best_epoch: usize,
    /// Its validation macro-F1 at that epoch.
    pub validation_macro_f1: f64,
}

impl SoupMember {
    fn of(report: &TrainingReport) -> Self {
        Self {
            seed: report.seed,
            best_epoch: report.best_epoch,
            validation_macro_f1: report.validation_macro_f1,
        }
    }
}

/// The trained model in memory, as the trainer computes it.
pub struct TrainedCategorizer {
    model: TrainableClassifier,
    lexical: Option<LexicalHead>,
    labels: Vec<String>,
    tokenizer: Tokenizer,
    pad_id: u32,
    device: Device,
}

impl std::fmt::Debug for TrainedCategorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainedCategorizer")
            .field("model", &self.model)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl TrainedCategorizer {
    /// Labels in id order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Logits of each text (one row per text, columns in [`Self::labels`] order).
    pub fn predict_logits(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, CategorizerError> {
        let ids = tokenize::encode(&self.tokenizer, texts)?;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in ids.chunks(64) {
            let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
            out.extend(logits(&self.model, &refs, self.pad_id, &self.device)?);
        }
        if let Some(head) = &self.lexical {
            for (row, text) in out.iter_mut().zip(texts) {
                head.blend(row, text);
            }
        }
        Ok(out)
    }

    /// The most likely label of each text.
    pub fn predict(&self, texts: &[&str]) -> Result<Vec<String>, CategorizerError> {
        Ok(self
            .predict_logits(texts)?
            .iter()
            .map(|row| self.labels[argmax(row)].clone())
            .collect())
    }
}

/// A finished run: its report and the kept model.
#[derive(Debug)]
pub struct TrainOutcome {
    /// What the run did (also in `training_report.json`).
    pub report: TrainingReport,
    /// The kept weights, in memory.
    pub model: TrainedCategorizer,
}

fn logits(
    model: &TrainableClassifier,
    batch: &[&[u32]],
    pad_id: u32,
    device: &Device,
) -> Result<Vec<Vec<f32>>, CategorizerError> {
    let (ids, mask) = tokenize::pad_batch(batch, pad_id, device)?;
    Ok(model.forward(&ids, &mask)?.detach().to_vec2::<f32>()?)
}

/// The encoder's shape and the `config.json` to write (without the label fields).
fn model_spec(
    init: &ModelInit,
    tokenizer: &Tokenizer,
    pad_id: u32,
    max_len: usize,
    pooling: ClassifierPooling,
) -> Result<(EncoderSpec, serde_json::Value), CategorizerError> {
    match init {
        ModelInit::Base { dir } => {
            let path = dir.join("config.json");
            let bytes = std::fs::read(&path).map_err(|e| CategorizerError::io(&path, e))?;
            let invalid = |message: String| CategorizerError::Base {
                dir: dir.clone(),
                message,
            };
            let cfg: BertConfig = serde_json::from_slice(&bytes)
                .map_err(|e| invalid(format!("config.json is not a BERT config: {e}")))?;
            let mut json: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| invalid(format!("config.json: {e}")))?;
            if max_len > cfg.max_position_embeddings {
                return Err(invalid(format!(
                    "--max-len {max_len} exceeds the model's {} positions",
                    cfg.max_position_embeddings
                )));
            }
            if tokenizer.get_vocab_size(true) > cfg.vocab_size {
                return Err(invalid(format!(
                    "the tokenizer has {} tokens, the model {}",
                    tokenizer.get_vocab_size(true),
                    cfg.vocab_size
                )));
            }
            if json.get("model_type").is_none() {
                json["model_type"] = "bert".into();
            }
            let spec = EncoderSpec {
                architecture: Architecture::Bert,
                vocab_size: cfg.vocab_size,
                hidden: cfg.hidden_size,
                layers: cfg.num_hidden_layers,
                heads: cfg.num_attention_heads,
                intermediate: cfg.intermediate_size,
                max_positions: cfg.max_position_embeddings,
                type_vocab_size: cfg.type_vocab_size,
                layer_norm_eps: cfg.layer_norm_eps,
                activation: match cfg.hidden_act {
                    HiddenAct::Gelu => Activation::GeluErf,
                    HiddenAct::GeluApproximate => Activation::GeluTanh,
                    HiddenAct::Relu => Activation::Relu,
                },
                pooling,
            };
            Ok((spec, json))
        }
        ModelInit::DistilBert {
            layers,
            hidden,
            heads,
            ..
        } => {
            let vocab_size = tokenizer.get_vocab_size(true);
            let spec = EncoderSpec {
                architecture: Architecture::DistilBert,
                vocab_size,
                hidden: *hidden,
                layers: *layers,
                heads: *heads,
                intermediate: 4 * hidden,
                // Serving truncates at max_position_embeddings: the length trained on.
                max_positions: max_len,
                type_vocab_size: 0,
                layer_norm_eps: 1e-12,
                // candle's DistilBERT runs "gelu" as the tanh approximation.
                activation: Activation::GeluTanh,
                pooling,
            };
            let json = serde_json::json!({
                "model_type": "distilbert",
                "vocab_size": vocab_size,
                "dim": hidden,
                "n_layers": layers,
                "n_heads": heads,
                "hidden_dim": 4 * hidden,
                "activation": "gelu",
                "max_position_embeddings": max_len,
                "initializer_range": 0.02,
                "pad_token_id": pad_id,
                "dropout": 0.1,
                "attention_dropout": 0.1,
                "qa_dropout": 0.1,
                "seq_classif_dropout": 0.2,
                "sinusoidal_pos_embds": false,
                "tie_weights_": true,
            });
            Ok((spec, json))
        }
    }
}

/// Hugging Face's initialisation, seeded: normal(0, 0.02) weights and embeddings, zero
/// biases, unit layer-norm scales. Variables are visited in name order so the result does
/// not depend on the map's iteration order.
fn init_weights(varmap: &VarMap, seed: u64) -> Result<(), CategorizerError> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| CategorizerError::Poisoned)?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut rng = SplitMix64::new(seed);
    for name in names {
        let var = &vars[name];
        let n = var.elem_count();
        let is_norm = name.contains("LayerNorm") || name.contains("layer_norm");
        let values: Vec<f32> = if name.ends_with(".bias") {
            vec![0.0; n]
        } else if is_norm {
            vec![1.0; n]
        } else {
            (0..n).map(|_| (rng.normal() * 0.02) as f32).collect()
        };
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?)?;
    }
    Ok(())
}

/// Copies a base encoder's weights into the `bert.*` variables. Every encoder tensor must be
/// there; the pooler is optional (sentence-transformers exports drop it).
fn load_base(varmap: &VarMap, dir: &Path) -> Result<(), CategorizerError> {
    let path = dir.join("model.safetensors");
    let base = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| {
        CategorizerError::Base {
            dir: dir.to_path_buf(),
            message: format!("model.safetensors: {e}"),
        }
    })?;
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| CategorizerError::Poisoned)?;
    for (name, var) in vars.iter() {
        let Some(rest) = name.strip_prefix("bert.") else {
            continue;
        };
        let candidates = [
            rest.to_string(),
            name.clone(),
            rest.replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta"),
        ];
        match candidates.iter().find_map(|c| base.get(c)) {
            Some(t) if t.dims() == var.dims() => var.set(&t.to_dtype(DType::F32)?)?,
            Some(t) => {
                return Err(CategorizerError::Base {
                    dir: dir.to_path_buf(),
                    message: format!(
                        "{rest} has shape {:?}, the config implies {:?}",
                        t.dims(),
                        var.dims()
                    ),
                });
            }
            None if rest.starts_with("pooler.") => {}
            None => {
                return Err(CategorizerError::Base {
                    dir: dir.to_path_buf(),
                    message: format!("model.safetensors has no tensor {rest}"),
                });
            }
        }
    }
    Ok(())
}

/// Peak `lr` reached linearly over `warmup` steps, then linear decay towards 0 at `total`.
pub(crate) fn lr_at(step: usize, total: usize, warmup: usize, lr: f64) -> f64 {
    if step < warmup {
        lr * (step + 1) as f64 / warmup as f64
    } else {
        lr * total.saturating_sub(step) as f64 / (total - warmup).max(1) as f64
    }
}

/// Inverse-frequency class weights normalised to mean 1 over the classes present.
pub(crate) fn class_weights(label_ids: &[u32], num_labels: usize) -> Vec<f32> {
    let mut counts = vec![0usize; num_labels];
    for &l in label_ids {
        counts[l as usize] += 1;
    }
    let inv: Vec<f64> = counts
        .iter()
        .map(|&c| if c == 0 { 0.0 } else { 1.0 / c as f64 })
        .collect();
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    let mean = inv.iter().sum::<f64>() / present as f64;
    inv.iter().map(|w| (w / mean) as f32).collect()
}

/// Weighted cross-entropy: `sum_i w[y_i] * -log p(y_i) / sum_i w[y_i]` (PyTorch's
/// weighted mean).
pub(crate) fn weighted_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> candle_core::Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let w = weights.index_select(targets, 0)?;
    let total_w = w.sum_all()?.to_scalar::<f32>()?;
    (picked * w)?.sum_all()?.neg()? / f64::from(total_w.max(f32::MIN_POSITIVE))
}

/// Copies of every variable's current value.
fn snapshot(varmap: &VarMap) -> Result<HashMap<String, Tensor>, CategorizerError> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| CategorizerError::Poisoned)?;
    vars.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect()
}

fn progress_bar(progress: bool, len: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "epoch {prefix} [{bar:30}] {pos}/{len} steps, loss {msg} ({elapsed}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

/// A new classifier as the run asks: seeded init, the base encoder's weights, and the
/// prototype or probe head from `ids` / `y` when asked for. Returns the probe's objective
/// when a probe was fitted.
fn new_model(
    p: &super::params::TrainParams,
    spec: &EncoderSpec,
    labels: &[String],
    ids: &[Vec<u32>],
    y: &[u32],
    pad_id: u32,
    device: &Device,
) -> Result<(VarMap, TrainableClassifier, Option<f64>), CategorizerError> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = TrainableClassifier::new(vb, spec, labels.len())?;
    init_weights(&varmap, p.init_seed.unwrap_or(p.seed))?;
    if let ModelInit::Base { dir } = &p.init {
        load_base(&varmap, dir)?;
    }
    if p.head_init == HeadInit::Random {
        return Ok((varmap, model, None));
    }
    let mut features = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(64) {
        let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
        let (t, mask) = tokenize::pad_batch(&refs, pad_id, device)?;
        features.extend(model.features(&t, &mask)?.detach().to_vec2::<f32>()?);
    }
    let ((w, b), probe_loss) = if p.head_init == HeadInit::Probe {
        let weights = class_weights(y, labels.len());
        let probe = probe_head(&features, y, labels.len(), &weights, p.probe_l2, device)?;
        ((probe.weight, probe.bias), Some(probe.loss))
    } else {
        (
            prototype_head(&features, y, labels.len(), PROTOTYPE_SCALE),
            None,
        )
    };
    {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| CategorizerError::Poisoned)?;
        let dim = features.first().map_or(0, Vec::len);
        for (name, values, shape) in [
            ("classifier.weight", w, vec![labels.len(), dim]),
            ("classifier.bias", b, vec![labels.len()]),
        ] {
            let var = vars
                .get(name)
                .ok_or(CategorizerError::Internal("no classifier variable"))?;
            var.set(&Tensor::from_vec(values, shape, device)?)?;
        }
    }
    Ok((varmap, model, probe_loss))
}

/// Runs up to `run_epochs` epochs of AdamW on `ids` / `y` (class-weighted cross-entropy,
/// warmup then linear decay over the run's full `--epochs` schedule). After each epoch
/// `after_epoch(epoch, mean loss)` may stop the run by returning `true`.
#[allow(clippy::too_many_arguments)]
fn fit(
    model: &TrainableClassifier,
    varmap: &VarMap,
    cfg: &TrainConfig,
    ids: &[Vec<u32>],
    y: &[u32],
    num_labels: usize,
    pad_id: u32,
    device: &Device,
    run_epochs: usize,
    mut after_epoch: impl FnMut(usize, f64) -> Result<bool, CategorizerError>,
) -> Result<(), CategorizerError> {
    let p = cfg.params();
    let weights = Tensor::new(class_weights(y, num_labels), device)?;
    let steps_per_epoch = ids.len().div_ceil(p.batch_size);
    let total_steps = steps_per_epoch * p.epochs;
    let warmup_steps = (p.warmup * total_steps as f64).round() as usize;
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: cfg.lr(),
            weight_decay: p.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    // Seeds apart from the split's, so changing one use does not shift the other.
    let mut rng = SplitMix64::new(p.seed ^ 0x5EED_0F5A_FF1E);
    let dropout = Dropout::new(p.dropout, p.dropout, p.seed ^ 0xD20F_0A7E);
    let mut order: Vec<usize> = (0..ids.len()).collect();
    let mut step = 0;
    for epoch in 1..=run_epochs.min(p.epochs) {
        rng.shuffle(&mut order);
        let bar = progress_bar(p.progress, steps_per_epoch, epoch, p.epochs);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(p.batch_size) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let targets: Vec<u32> = chunk.iter().map(|&i| y[i]).collect();
            let (t, mask) = tokenize::pad_batch(&batch, pad_id, device)?;
            let targets = Tensor::new(targets, device)?;
            let out = model.forward_train(&t, &mask, &dropout)?;
            let loss = weighted_cross_entropy(&out, &targets, &weights)?;
            opt.set_learning_rate(lr_at(step, total_steps, warmup_steps, cfg.lr()));
            opt.backward_step(&loss)?;
            let l = f64::from(loss.to_scalar::<f32>()?);
            loss_sum += l;
            step += 1;
            bar.set_message(format!("{l:.4}"));
            bar.inc(1);
        }
        bar.finish_and_clear();
        if after_epoch(epoch, loss_sum / steps_per_epoch.max(1) as f64)? {
            break;
        }
    }
    Ok(())
}

/// Trains a categoriser as `cfg` says and writes it to `cfg.params().out`. With
/// `soup > 1`, trains one model per seed `seed, seed + 1, ...` (each with its own validation
/// split, epoch choice and refit) from the same initial weights, and writes the uniform
/// average of their weights: a uniform model soup (Wortsman et al. 2022).
pub fn train(cfg: &TrainConfig) -> Result<TrainOutcome, CategorizerError> {
    let started = Instant::now();
    let p = cfg.params();
    let mut run = train_run(cfg)?;
    if p.soup > 1 {
        let mut members = vec![SoupMember::of(&run.report)];
        let mut sums = snapshot(&run.varmap)?;
        for k in 1..p.soup {
            let member = train_run(&cfg.soup_member(p.seed.wrapping_add(k as u64)))?;
            members.push(SoupMember::of(&member.report));
            for (name, t) in snapshot(&member.varmap)? {
                let sum = sums.get_mut(&name).ok_or(CategorizerError::Internal(
                    "soup members differ in variables",
                ))?;
                *sum = (&*sum + t)?;
            }
        }
        let vars = run
            .varmap
            .data()
            .lock()
            .map_err(|_| CategorizerError::Poisoned)?;
        for (name, sum) in &sums {
            if let Some(var) = vars.get(name) {
                var.set(&(sum / p.soup as f64)?)?;
            }
        }
        drop(vars);
        run.report.soup = members;
        run.report.elapsed_seconds = started.elapsed().as_secs_f64();
    }
    // The lexical head is fitted on every row of the data (see `fitted_rows`).
    if p.lexical_weight > 0.0 {
        let (texts, y) = &run.fitted_rows;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let labels = run.model.labels.clone();
        let head = fit_head(&refs, y, &labels, p.lexical_c, p.lexical_weight)?;
        if let Some(report) = &mut run.report.lexical {
            report.features = head.tfidf().len();
            report.rows = texts.len();
        }
        run.model.lexical = Some(head);
        run.report.elapsed_seconds = started.elapsed().as_secs_f64();
    }
    write_output(
        &p.out,
        p.init.tokenizer_dir(),
        &run.varmap,
        &run.config_json,
        &run.report,
    )?;
    match &run.model.lexical {
        Some(head) => head.save(&p.out)?,
        // A head left in `out` by an earlier run would be blended into this model.
        None => {
            for name in [lexical::CONFIG_FILE, lexical::WEIGHTS_FILE] {
                let path = p.out.join(name);
                if path.exists() {
                    std::fs::remove_file(&path).map_err(|e| CategorizerError::io(&path, e))?;
                }
            }
        }
    }
    Ok(TrainOutcome {
        report: run.report,
        model: run.model,
    })
}

/// One training run, not yet written.
struct Run {
    report: TrainingReport,
    varmap: VarMap,
    model: TrainedCategorizer,
    config_json: serde_json::Value,
    /// Texts and label ids the lexical head is fitted on (every row: training and validation).
    fitted_rows: (Vec<String>, Vec<u32>),
}

fn train_run(cfg: &TrainConfig) -> Result<Run, CategorizerError> {
    let started = Instant::now();
    let p = cfg.params();
    let device = Device::Cpu;

    let data = read_csv(&p.data, &p.text_column, &p.label_column)?;
    check_trainable(&data, &p.data)?;
    let label_counts = data.label_counts();
    let labels: Vec<String> = label_counts.keys().cloned().collect();
    let label_id: HashMap<&str, u32> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i as u32))
        .collect();
    let (train_set, val_set) = stratified_split(&data, p.val_fraction, p.seed)?;

    let tokenizer = tokenize::load_tokenizer(p.init.tokenizer_dir(), p.max_len)?;
    let pad_id = tokenize::pad_id(&tokenizer);
    let (spec, mut config_json) = model_spec(&p.init, &tokenizer, pad_id, p.max_len, p.pooling)?;

    let encode = |set: &LabelledTexts| -> Result<(Vec<Vec<u32>>, Vec<u32>), CategorizerError> {
        let texts: Vec<&str> = set.texts.iter().map(String::as_str).collect();
        let ids = tokenize::encode(&tokenizer, &texts)?;
        let y = set.labels.iter().map(|l| label_id[l.as_str()]).collect();
        Ok((ids, y))
    };
    let (train_ids, train_y) = encode(&train_set)?;
    let (val_ids, val_y) = encode(&val_set)?;
    let (varmap, model, probe_loss) =
        new_model(p, &spec, &labels, &train_ids, &train_y, pad_id, &device)?;

    let mut history = Vec::new();
    let mut best: Option<(f64, f64, usize, HashMap<String, Tensor>)> = None;
    let mut stale = 0;
    // Scores the model on the validation rows after `epoch` (0: the probe before any
    // fine-tuning), keeps the best weights and says whether to stop.
    let mut after_epoch = |epoch: usize, train_loss: f64| -> Result<bool, CategorizerError> {
        let mut predicted = Vec::with_capacity(val_ids.len());
        for chunk in val_ids.chunks(64) {
            let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
            for row in logits(&model, &refs, pad_id, &device)? {
                predicted.push(labels[argmax(&row)].as_str());
            }
        }
        let scores = score(&val_set.labels, &predicted);
        let stats = EpochStats {
            epoch,
            train_loss,
            val_accuracy: scores.accuracy,
            val_macro_f1: scores.macro_f1,
        };
        if p.progress {
            eprintln!(
                "epoch {epoch}/{}: loss {:.4}, validation accuracy {:.4}, macro-F1 {:.4}",
                p.epochs, stats.train_loss, stats.val_accuracy, stats.val_macro_f1
            );
        }
        history.push(stats);
        if best.as_ref().is_none_or(|b| scores.macro_f1 > b.0) {
            best = Some((scores.macro_f1, scores.accuracy, epoch, snapshot(&varmap)?));
            stale = 0;
        } else {
            stale += 1;
            if p.patience > 0 && stale >= p.patience {
                return Ok(true);
            }
        }
        Ok(false)
    };
    // With a probe, epoch 0 (the probe alone) competes with the fine-tuned epochs.
    let stop = match probe_loss {
        Some(loss) => after_epoch(0, loss)?,
        None => false,
    };
    if !stop {
        fit(
            &model,
            &varmap,
            cfg,
            &train_ids,
            &train_y,
            labels.len(),
            pad_id,
            &device,
            p.epochs,
            after_epoch,
        )?;
    }

    let (best_f1, best_acc, best_epoch, weights) =
        best.ok_or(CategorizerError::Internal("no epoch ran"))?;
    {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| CategorizerError::Poisoned)?;
        for (name, t) in &weights {
            if let Some(var) = vars.get(name) {
                var.set(t)?;
            }
        }
    }

    let lexical = if p.lexical_weight > 0.0 {
        Some(lexical_validation(
            p, &model, &train_set, &train_y, &val_set, &val_ids, &labels, pad_id, &device,
        )?)
    } else {
        None
    };

    // Refit: the validation rows only chose the number of epochs; train again from the same
    // start on every row for that many epochs (same schedule), and keep that model. When the
    // probe alone is kept (epoch 0: with `epochs = 0`, or no fine-tuning epoch beat it),
    // it is always refitted on every row, as the lexical head is: that costs one frozen
    // forward pass.
    // The lexical head chooses nothing on validation (its C is fixed; validation only scored
    // it above), so the head that is kept is fitted on every row, training and validation, as
    // the TF-IDF + logistic regression it mirrors would be, refit or not.
    let fitted_rows = {
        let mut texts = train_set.texts.clone();
        texts.extend(val_set.texts.iter().cloned());
        let mut y = train_y.clone();
        y.extend(&val_y);
        (texts, y)
    };
    let (varmap, model, refit_rows) = if p.refit || best_epoch == 0 {
        let mut all_ids = train_ids;
        all_ids.extend(val_ids);
        let mut all_y = train_y;
        all_y.extend(val_y);
        if p.progress {
            eprintln!(
                "refit on all {} rows for {best_epoch} epochs",
                all_ids.len()
            );
        }
        let (varmap, model, _) = new_model(p, &spec, &labels, &all_ids, &all_y, pad_id, &device)?;
        fit(
            &model,
            &varmap,
            cfg,
            &all_ids,
            &all_y,
            labels.len(),
            pad_id,
            &device,
            best_epoch,
            |epoch, loss| {
                if p.progress {
                    eprintln!("refit epoch {epoch}/{best_epoch}: loss {loss:.4}");
                }
                Ok(false)
            },
        )?;
        (varmap, model, Some(all_ids.len()))
    } else {
        (varmap, model, None)
    };

    let report = TrainingReport {
        architecture: spec.architecture.hf_name().to_string(),
        head_init: p.head_init.as_str().to_string(),
        epochs_run: history.iter().filter(|h| h.epoch > 0).count(),
        best_epoch,
        validation_accuracy: best_acc,
        validation_macro_f1: best_f1,
        label_counts,
        train_rows: train_set.len(),
        validation_rows: val_set.len(),
        refit_rows,
        seed: p.seed,
        lr: cfg.lr(),
        elapsed_seconds: started.elapsed().as_secs_f64(),
        history,
        soup: Vec::new(),
        lexical,
    };

    config_json["architectures"] = serde_json::json!([spec.architecture.hf_name()]);
    config_json["id2label"] = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), serde_json::Value::from(l.as_str())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    config_json["label2id"] = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), serde_json::Value::from(i)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    config_json["num_labels"] = labels.len().into();
    config_json["problem_type"] = "single_label_classification".into();
    if p.pooling != ClassifierPooling::Cls {
        config_json["classifier_pooling"] = p.pooling.as_str().into();
    }
    Ok(Run {
        report,
        varmap,
        model: TrainedCategorizer {
            model,
            lexical: None,
            labels,
            tokenizer,
            pad_id,
            device,
        },
        config_json,
        fitted_rows,
    })
}

/// Fits a lexical head on the training split and scores it, alone and blended with the kept
/// classifier, on the validation split.
#[allow(clippy::too_many_arguments)]
fn lexical_validation(
    p: &super::params::TrainParams,
    model: &TrainableClassifier,
    train_set: &LabelledTexts,
    train_y: &[u32],
    val_set: &LabelledTexts,
    val_ids: &[Vec<u32>],
    labels: &[String],
    pad_id: u32,
    device: &Device,
) -> Result<LexicalReport, CategorizerError> {
    let texts: Vec<&str> = train_set.texts.iter().map(String::as_str).collect();
    let head = fit_head(&texts, train_y, labels, p.lexical_c, p.lexical_weight)?;
    let mut lexical = Vec::with_capacity(val_ids.len());
    let mut blended = Vec::with_capacity(val_ids.len());
    for (chunk, texts) in val_ids.chunks(64).zip(val_set.texts.chunks(64)) {
        let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
        for (mut row, text) in logits(model, &refs, pad_id, device)?.into_iter().zip(texts) {
            lexical.push(labels[argmax(&head.logits(text))].as_str());
            head.blend(&mut row, text);
            blended.push(labels[argmax(&row)].as_str());
        }
    }
    let alone = score(&val_set.labels, &lexical).macro_f1;
    let blend = score(&val_set.labels, &blended).macro_f1;
    if p.progress {
        eprintln!(
            "lexical head on validation: macro-F1 {alone:.4} alone, {blend:.4} blended (weight {})",
            p.lexical_weight
        );
    }
    Ok(LexicalReport {
        blend_weight: p.lexical_weight,
        c: p.lexical_c,
        features: head.tfidf().len(),
        rows: texts.len(),
        validation_macro_f1_lexical: alone,
        validation_macro_f1_blend: blend,
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), CategorizerError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| CategorizerError::io(path, e))?;
    std::fs::write(path, bytes).map_err(|e| CategorizerError::io(path, e))
}

fn write_output(
    out: &Path,
    tokenizer_dir: &Path,
    varmap: &VarMap,
    config: &serde_json::Value,
    report: &TrainingReport,
) -> Result<(), CategorizerError> {
    std::fs::create_dir_all(out).map_err(|e| CategorizerError::io(out, e))?;
    write_json(&out.join("config.json"), config)?;
    write_json(&out.join("training_report.json"), report)?;
    let weights = out.join("model.safetensors");
    varmap
        .save(&weights)
        .map_err(|e| CategorizerError::io(&weights, e))?;
    let (from, to) = (
        tokenizer_dir.join("tokenizer.json"),
        out.join("tokenizer.json"),
    );
    if from != to {
        std::fs::copy(&from, &to).map_err(|e| CategorizerError::io(&to, e))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_near_zero() {
        let lrs: Vec<f64> = (0..10).map(|s| lr_at(s, 10, 2, 1.0)).collect();
        assert_eq!(lrs[0], 0.5);
        assert_eq!(lrs[1], 1.0);
        assert_eq!(lrs[2], 1.0);
        assert!(lrs[2..].windows(2).all(|w| w[1] < w[0]));
        assert!((lrs[9] - 0.125).abs() < 1e-12);
        assert_eq!(lr_at(0, 10, 0, 1.0), 1.0);
    }

    #[test]
    fn class_weights_are_inverse_frequency_with_mean_one() {
        let w = class_weights(&[0, 0, 0, 1], 2);
        assert!((w[1] / w[0] - 3.0).abs() < 1e-6);
        assert!(((w[0] + w[1]) / 2.0 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn weighted_cross_entropy_matches_a_hand_computation() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[2.0f32, 0.0], [0.0, 1.0]], &dev).unwrap();
        let targets = Tensor::new(&[0u32, 0], &dev).unwrap();
        let weights = Tensor::new(&[1.0f32, 3.0], &dev).unwrap();
        let got = weighted_cross_entropy(&logits, &targets, &weights)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let nll0 = -(2f32.exp() / (2f32.exp() + 1.0)).ln();
        let nll1 = -(1.0 / (1.0 + 1f32.exp())).ln();
        assert!((got - (nll0 + nll1) / 2.0).abs() < 1e-5, "{got}");
        let targets = Tensor::new(&[0u32, 1], &dev).unwrap();
        let got = weighted_cross_entropy(&logits, &targets, &weights)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let nll1 = -(1f32.exp() / (1.0 + 1f32.exp())).ln();
        assert!((got - (nll0 + 3.0 * nll1) / 4.0).abs() < 1e-5, "{got}");
    }
}
